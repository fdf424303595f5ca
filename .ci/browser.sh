#!/usr/bin/env bash
# Debian's Chromium for the dashboard test (tests/integration/test_web_amqp_mongo.py), which drives
# it with Playwright's Python package: no browser is downloaded, the test uses /usr/bin/chromium.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "browser: /usr/bin/chromium is missing; as root: apt-get install -y chromium" >&2
    exit 1
fi
echo "browser: installing Debian's chromium" >&2
DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 chromium >/dev/null
/usr/bin/chromium --version >&2 || true
