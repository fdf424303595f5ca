#!/usr/bin/env bash
# A Docker engine for the integration tests, and the local images they run.
#
#   bash .ci/containers.sh up      install the engine if missing, start it (no bridge network,
#                                  host networking only), build local/rabbitmq:3.10 if missing
#   bash .ci/containers.sh down    remove the test containers and stop the engine
#   bash .ci/containers.sh status  exit 0 when the engine answers
#   bash .ci/containers.sh env     print the environment the tests need (eval "$(... env)")
#
# No image registry is reachable on the project's machines, so the RabbitMQ image is built from
# Debian's own package on a debootstrapped base (see ../shared/CONTAINERS.md). Where Docker Hub is
# reachable the tests can use the official image instead: PAOTA_TEST_RABBITMQ_IMAGE=rabbitmq:3.13.
# `up` needs root and, unless docker.io and debootstrap are installed, apt-get (Debian).
#
# The engine lives under PAOTA_DOCKER_DIR (/var/lib/paota-docker): socket, data, logs. The nox
# sessions hold a shared lock on $DIR/sessions.lock while they use it and mark an engine they
# started with $DIR/session-owned; the last session out stops such an engine (see noxfile.py).
set -euo pipefail

DIR="${PAOTA_DOCKER_DIR:-/var/lib/paota-docker}"
SOCK="$DIR/docker.sock"
BASE_IMAGE="local/debian:bookworm"
RABBIT_IMAGE="${PAOTA_TEST_RABBITMQ_IMAGE:-local/rabbitmq:3.10}"
export DOCKER_HOST="unix://$SOCK"

log() { echo "containers: $*" >&2; }

# Seconds since $1 (a `date +%s%N` reading), with one decimal.
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

need_root() {
    [ "$(id -u)" = 0 ] && return
    log "$1 needs root; run Docker yourself (DOCKER_HOST) or set PAOTA_TEST_AMQP_URL"
    exit 3
}

install_engine() {
    if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
        && command -v docker >/dev/null 2>&1; then
        return
    fi
    need_root "installing docker.io and debootstrap"
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no apt-get: install dockerd, the docker CLI and debootstrap, or run Docker yourself"
        exit 3
    fi
    local t
    t=$(date +%s%N)
    log "installing docker.io and debootstrap from Debian"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q -o DPkg::Lock::Timeout=600 docker.io debootstrap >"$DIR/apt.log" 2>&1; then
        # A fresh machine may not have package lists yet.
        apt-get update -q -o DPkg::Lock::Timeout=600 >>"$DIR/apt.log" 2>&1
        apt-get install -y -q -o DPkg::Lock::Timeout=600 docker.io debootstrap >>"$DIR/apt.log" 2>&1 \
            || { tail -20 "$DIR/apt.log" >&2; exit 1; }
    fi
    log "installed in $(since "$t") s"
}

start_engine() {
    need_root "starting dockerd"
    local t
    t=$(date +%s%N)
    mkdir -p "$DIR/data" "$DIR/exec"
    log "starting dockerd (socket $SOCK)"
    # No bridge, no iptables: every container uses the host network, traffic stays on loopback.
    # The daemon gets a session of its own (a Ctrl-C in the caller's terminal is not for it) and
    # must not inherit the lock of `up` (fd 9), or it would hold it for its lifetime.
    setsid nohup dockerd -H "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec" \
        --pidfile "$DIR/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
        --ip-masq=false --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
        >"$DIR/dockerd.log" 2>&1 9>&- &
    for _ in $(seq 1 60); do
        if engine_up; then
            log "dockerd up in $(since "$t") s"
            return
        fi
        sleep 0.5
    done
    log "dockerd did not start; its log:"
    tail -20 "$DIR/dockerd.log" >&2
    exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

mirror() {
    # The Debian mirror apt already uses (the only archive the machine reaches).
    local uri
    uri=$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 \
        | awk '{print $2}')
    if [ -z "$uri" ]; then
        uri=$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
    have_image "$BASE_IMAGE" && return
    local rootfs="$DIR/rootfs" t
    t=$(date +%s%N)
    rm -rf "$rootfs"
    log "debootstrap bookworm (minbase) from $(mirror)"
    debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" >"$DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$DIR/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "$BASE_IMAGE made in $(since "$t") s"
}

build_rabbitmq() {
    have_image "$RABBIT_IMAGE" && return
    case "$RABBIT_IMAGE" in
        local/*) ;;
        *) log "pulling $RABBIT_IMAGE"; docker pull -q "$RABBIT_IMAGE" >/dev/null; return ;;
    esac
    build_base
    local ctx="$DIR/build-rabbitmq" t
    t=$(date +%s%N)
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$(dirname "$0")/rabbitmq/Dockerfile" "$(dirname "$0")/rabbitmq/entrypoint.sh" "$ctx/"
    log "building $RABBIT_IMAGE from Debian's rabbitmq-server"
    docker build -q --network host -t "$RABBIT_IMAGE" "$ctx" >/dev/null 2>"$DIR/build.log" \
        || { tail -20 "$DIR/build.log" >&2; exit 1; }
    log "$RABBIT_IMAGE built in $(since "$t") s"
}

remove_test_containers() {
    local ids
    ids=$(docker ps -aq --filter label=org.testcontainers=true 2>/dev/null || true)
    ids="$ids $(docker ps -aq --filter label=paota.test=true 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [ -n "${ids// /}" ] && docker rm -f $ids >/dev/null 2>&1 || true
}

stop_engine() {
    engine_up && remove_test_containers
    if [ -f "$DIR/dockerd.pid" ]; then
        local pid
        pid=$(cat "$DIR/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        log "dockerd stopped"
    fi
    # dockerd leaves its network namespace mounted; it makes a new one when it starts.
    if ! engine_up && mountpoint -q "$DIR/exec/netns/default" 2>/dev/null; then
        umount "$DIR/exec/netns/default" || true
    fi
    rm -f "$DIR/session-owned"
}

print_env() {
    cat <<ENV
export PAOTA_DOCKER_DIR=$DIR
export DOCKER_HOST=unix://$SOCK
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export TC_HOST=127.0.0.1
export PAOTA_TEST_RABBITMQ_IMAGE=$RABBIT_IMAGE
ENV
}

case "${1:-up}" in
    up)
        started=$(date +%s%N)
        if [ "$(id -u)" = 0 ]; then
            mkdir -p "$DIR"
            # One `up` at a time: two sessions starting together must not start two daemons.
            exec 9>"$DIR/up.lock"
            flock 9
        fi
        if ! engine_up; then
            install_engine
            start_engine
            # Containers a crashed run left behind (stopped with the old daemon); on an engine
            # that was already running they may be another session's brokers, so they stay.
            remove_test_containers
        fi
        build_rabbitmq
        log "ready in $(since "$started") s ($RABBIT_IMAGE)"
        ;;
    down) stop_engine ;;
    status) engine_up ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
