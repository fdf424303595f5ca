#!/usr/bin/env bash
# A Docker engine for the integration tests, and the local images they run.
#
#   bash .ci/containers.sh up     install the engine if missing, start it (no bridge network,
#                                 host networking only), build local/rabbitmq:3.10 if missing
#   bash .ci/containers.sh down   remove the test containers and stop the engine
#   bash .ci/containers.sh env    print the environment the tests need (eval "$(... env)")
#
# No image registry is reachable on the project's machines, so the RabbitMQ image is built from
# Debian's own package on a debootstrapped base (see ../shared/CONTAINERS.md). Where Docker Hub is
# reachable the tests can use the official image instead: PAOTA_TEST_RABBITMQ_IMAGE=rabbitmq:3.13.
set -euo pipefail

DIR="${PAOTA_DOCKER_DIR:-/var/lib/paota-docker}"
SOCK="$DIR/docker.sock"
BASE_IMAGE="local/debian:bookworm"
RABBIT_IMAGE="${PAOTA_TEST_RABBITMQ_IMAGE:-local/rabbitmq:3.10}"
export DOCKER_HOST="unix://$SOCK"

log() { echo "containers: $*" >&2; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install_engine() {
    if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
        && command -v docker >/dev/null 2>&1; then
        return
    fi
    log "installing docker.io and debootstrap from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
}

start_engine() {
    if engine_up; then
        return
    fi
    mkdir -p "$DIR/data" "$DIR/exec"
    log "starting dockerd (socket $SOCK)"
    # No bridge, no iptables: every container uses the host network, traffic stays on loopback.
    nohup dockerd -H "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec" \
        --pidfile "$DIR/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
        --ip-masq=false --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
        >"$DIR/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
        engine_up && return
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
    local rootfs="$DIR/rootfs"
    rm -rf "$rootfs"
    log "debootstrap bookworm (minbase) from $(mirror)"
    debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" >"$DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$DIR/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

build_rabbitmq() {
    have_image "$RABBIT_IMAGE" && return
    case "$RABBIT_IMAGE" in
        local/*) ;;
        *) log "pulling $RABBIT_IMAGE"; docker pull -q "$RABBIT_IMAGE" >/dev/null; return ;;
    esac
    build_base
    local ctx="$DIR/build-rabbitmq"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$(dirname "$0")/rabbitmq/Dockerfile" "$(dirname "$0")/rabbitmq/entrypoint.sh" "$ctx/"
    log "building $RABBIT_IMAGE from Debian's rabbitmq-server"
    docker build -q --network host -t "$RABBIT_IMAGE" "$ctx" >/dev/null 2>"$DIR/build.log" \
        || { tail -20 "$DIR/build.log" >&2; exit 1; }
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
    fi
}

print_env() {
    cat <<ENV
export DOCKER_HOST=unix://$SOCK
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export TC_HOST=127.0.0.1
export PAOTA_TEST_RABBITMQ_IMAGE=$RABBIT_IMAGE
ENV
}

case "${1:-up}" in
    up)
        started=$(date +%s)
        install_engine
        start_engine
        remove_test_containers
        build_rabbitmq
        log "ready in $(( $(date +%s) - started )) s ($RABBIT_IMAGE)"
        ;;
    down) stop_engine ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
