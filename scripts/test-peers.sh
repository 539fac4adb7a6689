#!/bin/sh
# Make sure the real servers the tests talk to are installed and running:
# Dovecot (installed here; each test run starts its own instances), PostgreSQL, and the
# brokers of the queue sink tests: RabbitMQ and Redis (running on 127.0.0.1), nats-server
# (installed; the tests start their own with JetStream).
set -eu

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "test-peers: $* missing; run as root or: apt-get install $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${apt_updated:-}" ]; then
        apt-get update -qq
        apt_updated=yes
    fi
    apt-get install -y -qq "$@" >/dev/null
}

port_up() {
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$1" 2>/dev/null
}

need_dovecot=""
for bin in /usr/sbin/dovecot /usr/bin/doveadm; do
    [ -x "$bin" ] || need_dovecot=yes
done
[ -e /usr/lib/dovecot/modules/auth/libauthdb_lua.so ] || need_dovecot=yes
if [ -n "$need_dovecot" ]; then
    apt_install dovecot-imapd dovecot-lmtpd dovecot-auth-lua
fi

# Debian's Chromium for the admin UI's browser tests (Playwright drives it; it downloads
# no browser of its own).
[ -x /usr/bin/chromium ] || apt_install chromium

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in 1 2 3 4 5 6 7 8 9 10; do pg_up && break; sleep 1; done
fi
if ! pg_up; then
    echo "test-peers: PostgreSQL is not answering on 127.0.0.1:5432 (set RELAY_TEST_ENGINES=sqlite to skip it)" >&2
    case "${RELAY_TEST_ENGINES:-sqlite,postgresql}" in *postgresql*) exit 1 ;; esac
fi
# Queue sinks: RabbitMQ (guest/guest) on 5672, Redis on 6379, nats-server on the PATH.
if ! port_up 5672; then
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
    # Debian's package starts it where systemd runs; elsewhere start it here.
    port_up 5672 || (RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached) >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do port_up 5672 && break; sleep 1; done
fi
if ! port_up 6379; then
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    port_up 6379 || redis-server --bind 127.0.0.1 --port 6379 --save '' --daemonize yes >/dev/null
    for _ in $(seq 1 20); do port_up 6379 && break; sleep 0.5; done
fi
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || apt_install nats-server
for peer in "RabbitMQ 5672" "Redis 6379"; do
    # shellcheck disable=SC2086
    set -- $peer
    port_up "$2" || { echo "test-peers: $1 is not answering on 127.0.0.1:$2" >&2; exit 1; }
done

echo "test-peers: Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1), PostgreSQL, RabbitMQ, Redis, nats-server, $(/usr/bin/chromium --version 2>/dev/null | cut -d' ' -f1,2) ready"
