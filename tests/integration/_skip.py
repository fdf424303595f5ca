"""Skip on a laptop without a service; fail in CI, where every integration test must run."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(reason: str) -> NoReturn:
    """``pytest.skip`` normally, ``pytest.fail`` when ``CI=true`` (a skip in CI is a failure)."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"integration test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)
