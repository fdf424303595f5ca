#!/bin/sh
# Start RabbitMQ in the foreground as user rabbitmq, straight from /usr/lib (Debian's /usr/sbin
# wrapper goes through su, and PID 1 would then ignore SIGTERM).
set -e
: "${RABBITMQ_NODENAME:=rabbit@localhost}"
: "${RABBITMQ_NODE_IP_ADDRESS:=127.0.0.1}"
export RABBITMQ_NODENAME RABBITMQ_NODE_IP_ADDRESS
export HOME=/var/lib/rabbitmq
# Loopback-only guest login is fine: every client connects over 127.0.0.1 on the host network.
# Nodes of one cluster share a cookie; rabbitmqctl run by `docker exec` (as root) needs it too.
if [ -n "${PAOTA_ERLANG_COOKIE:-}" ]; then
    for home in /var/lib/rabbitmq /root; do
        printf '%s' "$PAOTA_ERLANG_COOKIE" > "$home/.erlang.cookie"
        chmod 400 "$home/.erlang.cookie"
    done
    chown rabbitmq:rabbitmq /var/lib/rabbitmq/.erlang.cookie
fi
if [ -n "${RABBITMQ_CONF:-}" ]; then
    printf '%s\n' "$RABBITMQ_CONF" > /etc/rabbitmq/rabbitmq.conf
fi
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
