"""The relay's PostgreSQL crashes and comes back while mail arrives and webhooks go out.

The database is the test's own (:mod:`tests.peers.postgres`), stopped with ``pg_ctl -m
immediate`` (connections cut, no checkpoint) and started again. Through the outage the relay
keeps running: the API answers 503 with the JSON error shape, the listeners keep their
mailboxes, and when the database is back every message that arrived meanwhile is reported and
delivered once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.support import api, log_events, running, subjects, wait_subjects
from tests.peers.dovecot import DovecotServer
from tests.peers.postgres import PrivatePostgres
from tests.peers.receiver import Receiver
from tests.sources.imap.support import message

OUTAGE_MESSAGES = 10


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_postgresql_crash_while_mail_arrives_loses_nothing(
    tmp_path: Path, dovecot: DovecotServer, private_pg: PrivatePostgres, receiver: Receiver
) -> None:
    """PostgreSQL down ~15 s while ten messages arrive: the API answers 503 (JSON, no stack
    trace), the relay keeps running, and afterwards each message is delivered exactly once;
    the log says once that the store went away and once that it came back."""
    async with running(tmp_path, dovecot, private_pg.url, receiver) as run:
        await asyncio.to_thread(private_pg.crash)
        for n in range(OUTAGE_MESSAGES):
            await dovecot.append(run.user.user, "INBOX", message(f"during {n}"))
            await asyncio.sleep(0.5)
        for path in ("/v1/accounts", "/v1/account/dbfault"):
            status, body = await api(run.http, "GET", path)
            assert status == 503, body
            assert body["code"] == "StoreError", body
        await asyncio.sleep(10)
        assert run.relay.proc is not None
        assert run.relay.proc.poll() is None, run.relay.output()[-3000:]
        await asyncio.to_thread(private_pg.start)

        await wait_subjects(receiver, {f"during {n}" for n in range(OUTAGE_MESSAGES)}, 90)
        await dovecot.append(run.user.user, "INBOX", message("after"))
        await wait_subjects(receiver, {"after"}, 60)
        await asyncio.sleep(1.0)  # a repeat would show by now
        status, body = await api(run.http, "GET", "/v1/account/dbfault")
        assert status == 200, body
        assert body["state"] == "connected", body
    found = subjects(receiver)
    assert found == {"before": 1, "after": 1} | {f"during {n}": 1 for n in range(OUTAGE_MESSAGES)}
    said = log_events(run.relay)
    assert said["store unavailable; writes are retried"] == 1, said
    assert said["store available again"] == 1, said


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_shutdown_while_postgresql_is_down_exits_cleanly(
    tmp_path: Path, dovecot: DovecotServer, private_pg: PrivatePostgres, receiver: Receiver
) -> None:
    """SIGTERM while the database is down: the relay still stops by itself (exit 0), without
    a stack trace; its leases are left to expire."""
    async with running(tmp_path, dovecot, private_pg.url, receiver) as run:
        await asyncio.to_thread(private_pg.crash)
        await dovecot.append(run.user.user, "INBOX", message("lost connection"))
        await asyncio.sleep(2.0)
        code = await asyncio.to_thread(run.relay.stop)
    assert code == 0, run.relay.output()[-4000:]
    log_events(run.relay)
