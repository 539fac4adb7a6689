#!/bin/sh
# Make sure the real servers the tests talk to are installed and running:
# Dovecot (installed here; each test run starts its own instances) and PostgreSQL.
set -eu

need_dovecot=""
for bin in /usr/sbin/dovecot /usr/bin/doveadm; do
    [ -x "$bin" ] || need_dovecot=yes
done
[ -e /usr/lib/dovecot/modules/auth/libauthdb_lua.so ] || need_dovecot=yes
if [ -n "$need_dovecot" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "test-peers: Dovecot is missing; run as root or: apt-get install dovecot-imapd dovecot-lmtpd dovecot-auth-lua" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dovecot-imapd dovecot-lmtpd dovecot-auth-lua >/dev/null
fi

# Debian's Chromium for the admin UI's browser tests (Playwright drives it; it downloads
# no browser of its own).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "test-peers: Chromium is missing; run as root or: apt-get install chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

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
echo "test-peers: Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1), PostgreSQL ready, $(/usr/bin/chromium --version 2>/dev/null | cut -d' ' -f1,2)"
