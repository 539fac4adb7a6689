"""Pushes the server never sends: the IDLE listener's push check finds the change, once.

Two faults of real servers, both against a real Dovecot: a server whose IDLE goes quiet on a
healthy connection (Exchange Online), made with a proxy that drops untagged responses while
the client is in IDLE (:class:`tests.peers.tcpproxy.ImapIdleDrops`); and Dovecot itself,
which tells only the later of two IDLE sessions of one mailbox inside one ``imap`` process.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from relay.config import Settings
from relay.imap import Exists, ImapClient
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, start_dovecot
from tests.peers.tcpproxy import ImapIdleDrops, TcpProxy

from .relay_support import (
    PLAIN,
    add_account,
    fresh_account,
    mailbox,
    password_account,
    settle,
    start_relay,
    stored_events,
    subjects,
    wait_events,
    wait_state,
    wait_until,
)
from .support import Account, message

# The test-shortened check interval; no IDLE restart nor poller round meanwhile (either
# would be another way to find a change), so only the check can find a missed push.
CHECK = 1.0
QUIET = {"idle_restart": 3600.0, "poll_interval": 3600.0}
FOUND = "push check found a change the server did not push"
SHARED = Account("shared@example.com", "pw-shared", "t")


OpenMailbox = Callable[[DovecotServer, Account], Awaitable[ImapClient]]


@pytest.fixture
async def open_mailbox() -> AsyncIterator[OpenMailbox]:
    """Factory: another mail client's connection with INBOX selected (closed at the end)."""
    opened: list[ImapClient] = []

    async def factory(server: DovecotServer, user: Account) -> ImapClient:
        client = await mailbox(server, user)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()
    await asyncio.sleep(0.01)  # let the transports finish closing


class _Proxied:
    """``async with _Proxied(server, kinds) as (proxy, drops)``: a proxy in front of
    ``server``'s plain port dropping ``kinds`` while the client is in IDLE."""

    def __init__(self, server: DovecotServer, kinds: tuple[str, ...]) -> None:
        self.drops = ImapIdleDrops(kinds)
        self.proxy = TcpProxy(server.host, server.port, hook=self.drops)

    async def __aenter__(self) -> tuple[TcpProxy, ImapIdleDrops]:
        await self.proxy.start()
        return self.proxy, self.drops

    async def __aexit__(self, *exc: object) -> None:
        await self.proxy.stop()


async def _idling(drops: ImapIdleDrops, after: int = 0) -> None:
    """Wait until a connection is in IDLE, having sent more than ``after`` IDLEs."""

    async def check() -> bool:
        return drops.idling > 0 and drops.commands["IDLE"] > after

    await wait_until(check, "the listener's IDLE")


def _found(logs: list[dict[str, Any]], account: str) -> int:
    return sum(1 for e in logs if e["event"] == FOUND and e.get("account") == account)


async def _watch(client: TestClient, account: str, user: Account, port: int) -> None:
    await add_account(client, password_account(account, user, port))
    await wait_state(client, account, "connected")


async def test_missed_new_mail_is_found_by_the_push_check(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """New mail whose EXISTS never reaches the IDLE connection is reported once, by the push
    check (within push_check s, not at the next push or reconnect)."""
    user = await fresh_account(dovecot)
    async with _Proxied(dovecot, ("EXISTS", "RECENT")) as (proxy, drops):
        client = await start_relay(make_client, settings, push_check=CHECK, **QUIET)
        await _watch(client, "missed", user, proxy.port)
        await _idling(drops)
        with structlog.testing.capture_logs() as logs:
            await dovecot.append(user.user, "INBOX", message("never pushed"))
            (event,) = await wait_events(client, "missed", "messageNew")
        assert event["data"]["subject"] == "never pushed"
        assert drops.dropped["EXISTS"] >= 1
        assert _found(logs, "missed") == 1
        await settle()
        assert len(await stored_events(client, "missed", "messageNew")) == 1


async def test_without_the_check_missed_new_mail_waits_for_a_sync(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """With push_check = 0 the same missed push is not reported (several check intervals
    later) until something else syncs the folder; then it is reported once."""
    user = await fresh_account(dovecot)
    async with _Proxied(dovecot, ("EXISTS", "RECENT")) as (proxy, drops):
        client = await start_relay(make_client, settings, push_check=0.0, **QUIET)
        await _watch(client, "unchecked", user, proxy.port)
        await _idling(drops)
        await dovecot.append(user.user, "INBOX", message("never pushed"))
        await wait_until(lambda: asyncio.sleep(0, drops.dropped["EXISTS"]), "the dropped EXISTS")
        await asyncio.sleep(5 * CHECK)
        assert await stored_events(client, "unchecked", "messageNew") == []
        await call(client, "PUT", "/v1/account/unchecked/sync", {"sync": True})
        (event,) = await wait_events(client, "unchecked", "messageNew")
        assert event["data"]["subject"] == "never pushed"
        await settle()
        assert len(await stored_events(client, "unchecked", "messageNew")) == 1


async def test_missed_flag_change_and_expunge_are_found(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    open_mailbox: OpenMailbox,
) -> None:
    """With every push dropped (EXISTS, FETCH, VANISHED), new mail, a flag change and an
    expunge are each reported once, all found by the check (QRESYNC: CHANGEDSINCE)."""
    user = await fresh_account(dovecot)
    kinds = ("EXISTS", "RECENT", "FETCH", "EXPUNGE", "VANISHED")
    async with _Proxied(dovecot, kinds) as (proxy, drops):
        client = await start_relay(make_client, settings, push_check=CHECK, **QUIET)
        await _watch(client, "silent", user, proxy.port)
        await _idling(drops)
        other = await open_mailbox(dovecot, user)
        with structlog.testing.capture_logs() as logs:
            uid = (await other.append("INBOX", message("silent"))).uid
            assert uid is not None
            (new,) = await wait_events(client, "silent", "messageNew")
            await other.uid_store(uid, "+FLAGS", ["\\Flagged"])
            (updated,) = await wait_events(client, "silent", "messageUpdated")
            await other.uid_store(uid, "+FLAGS.SILENT", ["\\Deleted"])
            await other.expunge()
            (deleted,) = await wait_events(client, "silent", "messageDeleted")
        assert updated["data"]["id"] == new["data"]["id"]
        assert updated["data"]["changes"]["flags"]["added"] == ["\\Flagged"]
        assert deleted["data"]["uid"] == uid
        assert drops.dropped["EXISTS"] >= 1
        assert drops.dropped["FETCH"] >= 1
        assert drops.dropped["VANISHED"] + drops.dropped["EXPUNGE"] >= 1
        # The \Deleted flag (not reported: it is not a visible flag) may be found by a check
        # of its own, before the expunge.
        assert _found(logs, "silent") >= 3
        await settle()
        for kind in ("messageNew", "messageUpdated", "messageDeleted"):
            assert len(await stored_events(client, "silent", kind)) == 1, kind


async def test_pushes_and_checks_report_each_change_once(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    open_mailbox: OpenMailbox,
) -> None:
    """Pushes arriving between and around checks (every 1 s without a push): every
    message, flag change and expunge is reported exactly once, and the checks that found
    nothing are counted."""
    user = await fresh_account(dovecot)
    async with _Proxied(dovecot, ()) as (proxy, drops):
        client = await start_relay(make_client, settings, push_check=CHECK, **QUIET)
        await _watch(client, "both", user, proxy.port)
        await _idling(drops)
        other = await open_mailbox(dovecot, user)
        uids = []
        # Dovecot pushes ~0.5 s after a change: some of these come as pushes in an IDLE,
        # some with a check's command (its IDLE ended first), some close to a check.
        for n, pause in enumerate((0.0, 0.2, 0.2, 1.1, 0.9, 1.0, 0.45, 1.3)):
            await asyncio.sleep(pause)
            uids.append((await other.append("INBOX", message(f"m{n}"))).uid)
        await wait_events(client, "both", "messageNew", len(uids))
        await other.uid_store(uids[0], "+FLAGS", ["\\Seen"])
        await wait_events(client, "both", "messageUpdated")
        await other.uid_store(uids[1], "+FLAGS.SILENT", ["\\Deleted"])
        await other.expunge()
        await wait_events(client, "both", "messageDeleted")
        await asyncio.sleep(2.5 * CHECK)  # checks after the last push find nothing new
        await settle()
        found = await stored_events(client, "both", "messageNew")
        assert Counter(subjects(found)) == {f"m{n}": 1 for n in range(len(uids))}
        assert len(await stored_events(client, "both", "messageUpdated")) == 1
        assert len(await stored_events(client, "both", "messageDeleted")) == 1
        assert drops.passed["EXISTS"] >= 1
        metrics = await (await client.get("/metrics")).text()
        assert _sample(metrics, 'relay_imap_push_checks_total{found="false"}') >= 2


async def test_server_without_condstore_missed_mail_and_expunge(
    plain_dovecot: DovecotServer,
    make_client: MakeClient,
    settings: Settings,
    open_mailbox: OpenMailbox,
) -> None:
    """Without CONDSTORE (Exchange Online) the check is ``UID FETCH * (UID)``: missed new
    mail (a UID at or above uidnext) and a missed expunge (fewer messages) are each found
    and reported once."""
    server, user = plain_dovecot, PLAIN
    kinds = ("EXISTS", "RECENT", "EXPUNGE")
    async with _Proxied(server, kinds) as (proxy, drops):
        client = await start_relay(make_client, settings, push_check=CHECK, **QUIET)
        await _watch(client, "plain", user, proxy.port)
        await _idling(drops)
        other = await open_mailbox(server, user)
        assert "CONDSTORE" not in other.capabilities
        with structlog.testing.capture_logs() as logs:
            uid = (await other.append("INBOX", message("plain"))).uid
            assert uid is not None
            (new,) = await wait_events(client, "plain", "messageNew")
            await other.uid_store(uid, "+FLAGS.SILENT", ["\\Deleted"])
            await other.expunge()
            (deleted,) = await wait_events(client, "plain", "messageDeleted")
        assert deleted["data"]["id"] == new["data"]["id"]
        assert drops.dropped["EXISTS"] >= 1
        assert drops.dropped["EXPUNGE"] >= 1
        assert _found(logs, "plain") >= 2
        await settle()
        assert len(await stored_events(client, "plain", "messageNew")) == 1
        assert len(await stored_events(client, "plain", "messageDeleted")) == 1


@pytest.fixture
def shared_process_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot serving many connections per ``imap`` process (``client_limit = 50``)."""
    server = start_dovecot(tuned=True, users={SHARED.user: SHARED.password})
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


async def test_dovecot_telling_only_the_later_idle_is_caught_by_the_check(
    shared_process_dovecot: DovecotServer,
    make_client: MakeClient,
    settings: Settings,
) -> None:
    """Dovecot tells only the later of two IDLEs on one mailbox in one process: the
    relay's (the earlier) is not told of new mail; its check finds it, once."""
    server = shared_process_dovecot
    told: list[object] = []
    async with _Proxied(server, ()) as (proxy, drops):
        client = await start_relay(make_client, settings, push_check=CHECK, **QUIET)
        await _watch(client, "shared", SHARED, proxy.port)
        await _idling(drops)
        later = await ImapClient.connect(server.host, server.port, on_update=told.append)
        try:
            await later.login(SHARED.user, SHARED.password)
            await later.select("INBOX")
            await later.idle_start()
            with structlog.testing.capture_logs() as logs:
                await server.append(SHARED.user, "INBOX", message("told the other one"))
                (event,) = await wait_events(client, "shared", "messageNew")
            assert any(isinstance(u, Exists) for u in told)
        finally:
            later.close()
        assert event["data"]["subject"] == "told the other one"
        # Nothing reached the relay's IDLE: the check asked, and Dovecot answered.
        assert drops.passed["EXISTS"] == 0
        assert _found(logs, "shared") == 1
        await settle()
        assert len(await stored_events(client, "shared", "messageNew")) == 1


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")
