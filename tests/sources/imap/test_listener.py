"""IMAP IDLE listeners in a running relay against a real Dovecot: events stored exactly once."""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from relay.api.keys import NODE, STORE, SUPERVISOR
from relay.config import Settings
from relay.events.normalize import message_id, parse_message_id
from relay.imap.client import ImapClient
from relay.sources.assignment import assign
from relay.store.schema import accounts, folder_lists, imap_folders
from tests.api.helpers import add_app, call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, start_dovecot
from tests.peers.receiver import Receiver
from tests.peers.tcpproxy import TcpProxy
from tests.webhooks.conftest import SERVICE_SECRET, loopback_settings

from .relay_support import (
    PLAIN,
    WAIT,
    add_account,
    deliver_offline,
    folder_row,
    fresh_account,
    mailbox,
    password_account,
    relay_settings,
    settle,
    start_relay,
    stored_events,
    subjects,
    wait_events,
    wait_state,
    wait_until,
    write_ca,
)
from .support import Account, message

ATTACHED = (
    b"From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.org>\r\nTo: Ann <a@example.com>\r\n"
    b"Cc: c@example.com\r\nSubject: =?UTF-8?Q?Rechnung_=E2=82=AC?=\r\n"
    b"Message-ID: <invoice-1@example.org>\r\nDate: Mon, 17 Oct 2022 09:42:07 +0300\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b1--\r\n"
)


AUTO_REPLY = (
    b"From: Bob <bob@example.org>\r\nTo: ann@example.com\r\nSubject: Re: Ticket 9\r\n"
    b"Message-ID: <ooo-9@example.org>\r\nIn-Reply-To: <ticket-9@example.com>\r\n"
    b"Auto-Submitted: auto-replied\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\r\n"
    b"I am away until Monday.\r\n"
)
BOUNCE = (
    b"From: Mail Delivery System <MAILER-DAEMON@example.com>\r\nTo: ann@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-9@example.com>\r\n"
    b"Date: Tue, 1 Dec 2026 10:00:01 +0000\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
    b' boundary="dsn"\r\n\r\n'
    b"--dsn\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    b"Your message could not be delivered.\r\n"
    b"--dsn\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
    b"Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
    b"--dsn\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: ann@example.com\r\nTo: nobody@example.net\r\nSubject: Ticket 9\r\n"
    b"Message-ID: <ticket-9@example.com>\r\n\r\nHello\r\n--dsn--\r\n"
)


KICK = Account("kick@example.com", "pw-kick", "t")


@pytest.fixture
def own_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot for one test (it gets restarted); request it before ``make_client``."""
    server = start_dovecot(users={KICK.user: KICK.password})
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


_start = start_relay
_fresh = fresh_account


async def test_password_login_new_mail_event(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """LOGIN account: APPEND elsewhere -> one messageNew with EmailEngine's fields."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    await add_account(client, password_account("pw", user, dovecot.port))
    await wait_state(client, "pw", "connected")
    (initialized,) = await wait_events(client, "pw", "accountInitialized")
    assert initialized["data"] == {"initialized": True}
    other = await mailbox(dovecot, user)
    appended = await other.append("INBOX", ATTACHED)
    (event,) = await wait_events(client, "pw", "messageNew")
    assert event["path"] == "INBOX"
    assert event["specialUse"] == "\\Inbox"
    assert event["serviceUrl"] == "https://relay.example.com"
    data = event["data"]
    assert data["uid"] == appended.uid
    assert parse_message_id(data["id"])[1:3] == (appended.uidvalidity, appended.uid)
    assert data["subject"] == "Rechnung €"
    assert data["from"] == {"name": "Jürgen", "address": "j@example.org"}
    assert data["to"] == [{"name": "Ann", "address": "a@example.com"}]
    assert data["cc"] == [{"name": "", "address": "c@example.com"}]
    assert data["messageId"] == "<invoice-1@example.org>"
    assert data["date"] == "2022-10-17T06:42:07.000Z"
    assert data["unseen"] is True
    assert data["flags"] == []
    assert data["size"] == len(ATTACHED)
    (attachment,) = data["attachments"]
    assert attachment["filename"] == "invoice.pdf"
    assert attachment["contentType"] == "application/pdf"
    assert attachment["id"].startswith(data["id"])
    assert data["messageSpecialUse"] == "\\Inbox"
    assert data["text"]["id"] == data["id"]
    assert set(data["text"]["encodedSize"]) == {"plain"}
    assert not {"flagged", "answered", "draft", "isAutoReply", "isBounce"} & set(data)
    await other.logout()
    await settle()
    assert len(await stored_events(client, "pw", "messageNew")) == 1


async def test_auto_reply_and_bounce_are_marked(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """An auto-reply and a DSN in INBOX: messageNew with isAutoReply, isBounce and the
    bounced message's relatedMessageId, messageSpecialUse, and a text id the API reads."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    await add_account(client, password_account("kinds", user, dovecot.port))
    await wait_state(client, "kinds", "connected")
    other = await mailbox(dovecot, user)
    await other.append("INBOX", AUTO_REPLY, flags=["\\Flagged"])
    await other.append("INBOX", BOUNCE)
    found = await wait_events(client, "kinds", "messageNew", 2)
    by_subject = {e["data"]["subject"]: e["data"] for e in found}
    auto = by_subject["Re: Ticket 9"]
    assert auto["isAutoReply"] is True
    assert auto["flagged"] is True
    assert auto["messageSpecialUse"] == "\\Inbox"
    assert not {"isBounce", "isComplaint", "relatedMessageId"} & set(auto)
    bounce = by_subject["Undelivered Mail Returned to Sender"]
    assert bounce["isBounce"] is True
    assert bounce["relatedMessageId"] == "<ticket-9@example.com>"
    assert bounce["messageSpecialUse"] == "\\Inbox"
    assert "isAutoReply" not in bounce
    text = await call(client, "GET", f"/v1/account/kinds/text/{auto['text']['id']}?textType=*")
    assert text["plain"] == "I am away until Monday.\n"
    assert auto["text"]["encodedSize"] == {"plain": len(b"I am away until Monday.\r\n")}
    await other.logout()


async def test_flag_change_and_delete_events(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Flagging reports messageUpdated (added/removed/value), expunging messageDeleted."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    await add_account(client, password_account("flags", user, dovecot.port))
    await wait_state(client, "flags", "connected")
    other = await mailbox(dovecot, user)
    uid = (await other.append("INBOX", message("flag me"))).uid
    assert uid is not None
    (new,) = await wait_events(client, "flags", "messageNew")
    await other.uid_store(uid, "+FLAGS", ["\\Seen", "$Work"])
    (updated,) = await wait_events(client, "flags", "messageUpdated")
    assert updated["data"]["id"] == new["data"]["id"]
    flags = updated["data"]["changes"]["flags"]
    assert sorted(flags["added"]) == ["$Work", "\\Seen"]
    assert flags["deleted"] == []
    await other.uid_store(uid, "-FLAGS", ["$Work"])
    second = (await wait_events(client, "flags", "messageUpdated", 2))[1]
    assert second["data"]["changes"]["flags"] == {
        "added": [],
        "deleted": ["$Work"],
        "removed": ["$Work"],
        "value": ["\\Seen"],
    }
    await other.uid_store(uid, "+FLAGS.SILENT", ["\\Deleted"])
    await other.expunge()
    (deleted,) = await wait_events(client, "flags", "messageDeleted")
    assert deleted["data"] == {"id": new["data"]["id"], "uid": uid}
    await other.logout()
    await settle()
    assert len(await stored_events(client, "flags", "messageDeleted")) == 1


async def test_existing_mail_is_baseline_unless_after_notify_from(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Mail present at the first connect is not reported, except after notifyFrom."""
    user = await _fresh(dovecot)
    other = await mailbox(dovecot, user)
    await other.append("INBOX", message("old"), date=datetime(2020, 1, 1, tzinfo=UTC))
    await other.append("INBOX", message("recent"), date=datetime(2025, 6, 1, tzinfo=UTC))
    await other.logout()
    client = await _start(make_client, settings)
    await add_account(
        client,
        password_account("nf", user, dovecot.port, notifyFrom="2025-01-01T00:00:00Z"),
    )
    found = await wait_events(client, "nf", "messageNew")
    assert subjects(found) == ["recent"]
    await wait_events(client, "nf", "accountInitialized")
    await settle()
    assert subjects(await stored_events(client, "nf", "messageNew")) == ["recent"]


async def test_xoauth2_main_and_shared_mailbox(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """XOAUTH2 with the main user's token opens its own and a granted shared mailbox;
    a mailbox not granted ends in authenticationError until a grant and a reconnect."""
    main = await _fresh(dovecot)
    shared = await _fresh(dovecot)
    denied = await _fresh(dovecot)
    await asyncio.to_thread(dovecot.grant, main.token, main.user, [shared.user])
    client = await _start(make_client, settings)
    app_id = await add_app(client)
    await add_account(
        client,
        {
            "account": "main",
            "name": "Main",
            "email": main.user,
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False},
            "oauth2": {"provider": app_id, "auth": {"user": main.user}, "accessToken": main.token},
        },
    )
    for account_id, target in (("shared", shared), ("denied", denied)):
        await add_account(
            client,
            {
                "account": account_id,
                "name": account_id,
                "email": target.user,
                "oauth2": {"auth": {"delegatedUser": target.user, "delegatedAccount": "main"}},
            },
        )
    await wait_state(client, "main", "connected")
    await wait_state(client, "shared", "connected")
    await wait_state(client, "denied", "authenticationError")
    (refused,) = await wait_events(client, "denied", "authenticationError")
    assert refused["data"]["serverResponseCode"] == "AUTHENTICATIONFAILED"
    view = await call(client, "GET", "/v1/account/denied")
    assert view["lastError"]["serverResponseCode"] == "AUTHENTICATIONFAILED"

    await dovecot.append(shared.user, "INBOX", message("to the shared box"))
    (event,) = await wait_events(client, "shared", "messageNew")
    assert event["data"]["subject"] == "to the shared box"
    assert await stored_events(client, "main", "messageNew") == []
    # The shared mailbox's other folders are polled on its connection, and its folders
    # created later are reported, all under the shared account.
    await wait_until(lambda: _listed(client, "shared"), "the shared mailbox's folders listed")
    await dovecot.append(shared.user, "Sent", message("sent by the shared box"))
    await dovecot.doveadm("mailbox", "create", "-u", shared.user, "Shared Cases")
    events = await wait_events(client, "shared", "messageNew", 2)
    assert (events[1]["path"], events[1]["data"]["subject"]) == ("Sent", "sent by the shared box")
    (created,) = await wait_events(client, "shared", "mailboxNew")
    assert created["data"]["path"] == "Shared Cases"
    assert await stored_events(client, "main", "mailboxNew") == []

    # auth_retry is 60 s: only the reconnect request can make it try again this soon.
    await asyncio.to_thread(dovecot.grant, main.token, main.user, [shared.user, denied.user])
    await call(client, "PUT", "/v1/account/denied/reconnect", {"reconnect": True})
    await wait_state(client, "denied", "connected")
    (success,) = await wait_events(client, "denied", "authenticationSuccess")
    assert success["data"] == {"user": denied.user}
    assert (await call(client, "GET", "/v1/account/denied")).get("lastError") is None
    assert len(await stored_events(client, "denied", "authenticationError")) == 1


async def _listed(client: TestClient, account: str) -> bool:
    async with client.app[STORE].read() as conn:
        found = await conn.scalar(
            select(folder_lists.c.account).where(folder_lists.c.account == account)
        )
    return found is not None


async def test_kick_and_server_restart_report_every_message_once(
    own_dovecot: DovecotServer, make_client: MakeClient, settings: Settings
) -> None:
    """After a kick and a restart (mail delivered while the server was down) every
    message is reported exactly once."""
    server, user = own_dovecot, KICK
    client = await _start(make_client, settings)
    await add_account(client, password_account("kick", user, server.port))
    await wait_state(client, "kick", "connected")
    await server.append(user.user, "INBOX", message("one"))
    await wait_events(client, "kick", "messageNew", 1)
    await server.kick(user.user)
    await server.append(user.user, "INBOX", message("two"))
    await wait_events(client, "kick", "messageNew", 2)
    await asyncio.to_thread(server.stop)
    await deliver_offline(server, user, message("three"))
    await wait_events(client, "kick", "connectError")
    await asyncio.to_thread(server.start)
    await server.append(user.user, "INBOX", message("four"))
    found = await wait_events(client, "kick", "messageNew", 4)
    await wait_state(client, "kick", "connected")
    await settle()
    found = await stored_events(client, "kick", "messageNew")
    assert Counter(subjects(found)) == {"one": 1, "two": 1, "three": 1, "four": 1}
    assert len(await stored_events(client, "kick", "connectError")) == 1


def _imap_clients() -> int:
    """Connection objects in the heap, reachable or not (the collector is off)."""
    return sum(1 for o in gc.get_objects() if type(o) is ImapClient)


async def test_a_connection_the_server_ends_is_freed_without_the_collector(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """The error that ends a connection holds, in its traceback, frames that hold the
    connection. Once the listener has handled it, the connection (its buffers, its TLS
    state) is freed at once, not at the collector's next full pass: a server restart ends
    every connection together, and their garbage would pile up until then."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    await add_account(client, password_account("freed", user, dovecot.port))
    await wait_state(client, "freed", "connected")
    gc.collect()
    gc.disable()
    try:
        before = _imap_clients()
        for n in range(3):
            await dovecot.kick(user.user)
            await dovecot.append(user.user, "INBOX", message(f"after kick {n}"))
            await wait_events(client, "freed", "messageNew", n + 1)
        assert _imap_clients() == before
    finally:
        gc.enable()


async def test_blackholed_connection_is_detected_and_recovered(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A connection that silently stops answering is declared dead at the next IDLE
    restart (DONE unanswered); after the path recovers, mail from the outage arrives once."""
    user = await _fresh(dovecot)
    async with _proxy(dovecot) as proxy:
        client = await _start(
            make_client, settings, idle_restart=0.5, done_timeout=0.5, connect_timeout=0.5
        )
        await add_account(client, password_account("hole", user, proxy.port))
        await wait_state(client, "hole", "connected")
        proxy.blackhole()
        await dovecot.append(user.user, "INBOX", message("during the outage"))
        await wait_state(client, "hole", "disconnected", "connectError")
        proxy.restore()
        await wait_state(client, "hole", "connected")
        found = await wait_events(client, "hole", "messageNew")
        assert subjects(found) == ["during the outage"]
        await settle()
        assert len(await stored_events(client, "hole", "messageNew")) == 1


async def test_relay_restart_catches_up_without_duplicates(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Changes made while the relay is down are reported once at the next start
    (QRESYNC catch-up); nothing reported before is reported again."""
    user = await _fresh(dovecot)
    other = await mailbox(dovecot, user)
    baseline_uid = (await other.append("INBOX", message("baseline"))).uid
    config = relay_settings(settings)
    first = await make_client(config)
    await add_account(first, password_account("rs", user, dovecot.port))
    await wait_state(first, "rs", "connected")
    kept_uid = (await other.append("INBOX", message("kept"))).uid
    (kept,) = await wait_events(first, "rs", "messageNew")
    await first.close()

    await other.append("INBOX", message("while down 1"))
    await other.append("INBOX", message("while down 2"))
    await other.uid_store(kept_uid, "+FLAGS", ["\\Flagged"])
    await other.uid_store(baseline_uid, "+FLAGS.SILENT", ["\\Deleted"])
    await other.expunge()

    second = await make_client(config)
    found = await wait_events(second, "rs", "messageNew", 3)
    (updated,) = await wait_events(second, "rs", "messageUpdated")
    (deleted,) = await wait_events(second, "rs", "messageDeleted")
    assert updated["data"]["id"] == kept["data"]["id"]
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Flagged"]
    assert deleted["data"]["uid"] == baseline_uid
    await other.logout()
    await settle()
    found = await stored_events(second, "rs", "messageNew")
    assert Counter(subjects(found)) == {"kept": 1, "while down 1": 1, "while down 2": 1}
    assert len(await stored_events(second, "rs", "accountInitialized")) == 1
    assert len(await stored_events(second, "rs", "messageUpdated")) == 1
    assert len(await stored_events(second, "rs", "messageDeleted")) == 1


async def test_server_without_condstore_or_qresync(
    plain_dovecot: DovecotServer, make_client: MakeClient, settings: Settings
) -> None:
    """Against a server without CONDSTORE/QRESYNC, UID SEARCH and FLAGS diffs find the
    same changes, live and after a relay restart."""
    server, user = plain_dovecot, PLAIN
    config = relay_settings(settings)
    first = await make_client(config)
    await add_account(first, password_account("plain", user, server.port))
    await wait_state(first, "plain", "connected")
    other = await mailbox(server, user)
    assert "CONDSTORE" not in other.capabilities
    one = (await other.append("INBOX", message("one"))).uid
    two = (await other.append("INBOX", message("two"))).uid
    await wait_events(first, "plain", "messageNew", 2)
    await other.uid_store(one, "+FLAGS", ["\\Seen"])
    await wait_events(first, "plain", "messageUpdated")
    await other.uid_store(one, "+FLAGS.SILENT", ["\\Deleted"])
    await other.expunge()
    await wait_events(first, "plain", "messageDeleted")
    await first.close()

    await other.uid_store(two, "+FLAGS", ["\\Answered"])
    await other.append("INBOX", message("three"))
    second = await make_client(config)
    await wait_events(second, "plain", "messageNew", 3)
    updates = await wait_events(second, "plain", "messageUpdated", 2)
    assert updates[1]["data"]["changes"]["flags"]["added"] == ["\\Answered"]
    await other.logout()
    await settle()
    found = await stored_events(second, "plain", "messageNew")
    assert Counter(subjects(found)) == {"one": 1, "two": 1, "three": 1}
    assert len(await stored_events(second, "plain", "messageUpdated")) == 2
    assert len(await stored_events(second, "plain", "messageDeleted")) == 1


async def test_uidvalidity_change_resets_instead_of_flooding(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A new UIDVALIDITY reports mailboxReset and a new baseline, not deletions and new mail."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    await add_account(client, password_account("uv", user, dovecot.port))
    await wait_state(client, "uv", "connected")
    await dovecot.append(user.user, "INBOX", message("before"))
    (before,) = await wait_events(client, "uv", "messageNew")
    await dovecot.doveadm("mailbox", "update", "--uid-validity", "4242", "-u", user.user, "INBOX")
    await dovecot.kick(user.user)
    (reset,) = await wait_events(client, "uv", "mailboxReset")
    assert reset["path"] == "INBOX"
    assert reset["data"]["uidValidity"] == "4242"
    assert int(reset["data"]["prevUidValidity"]) == parse_message_id(before["data"]["id"])[1]
    assert (reset["data"]["path"], reset["data"]["name"]) == ("INBOX", "INBOX")
    assert reset["data"]["specialUse"] == "\\Inbox"
    await dovecot.append(user.user, "INBOX", message("after"))
    found = await wait_events(client, "uv", "messageNew", 2)
    after = found[1]["data"]
    assert subjects(found) == ["before", "after"]
    assert after["id"] == message_id(1, 4242, after["uid"])
    await settle()
    assert await stored_events(client, "uv", "messageDeleted") == []
    assert len(await stored_events(client, "uv", "messageNew")) == 2


async def test_reconnect_and_sync_requests_act(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """PUT reconnect opens a new connection at once; PUT sync (or the sync column changed
    by another node) runs a catch-up at once; IDLE restarts are far away. INBOX's connection
    is the account's only one (it also polls the other folders)."""
    user = await _fresh(dovecot)
    async with _proxy(dovecot) as proxy:
        client = await _start(make_client, settings, idle_restart=600.0, scan_interval=0.3)
        await add_account(client, password_account("req", user, proxy.port))
        await wait_state(client, "req", "connected")
        synced = (await folder_row(client, "req")).synced_ms
        assert proxy.accepted == 1

        await call(client, "PUT", "/v1/account/req/reconnect", {"reconnect": True})
        await wait_until(_at_least(proxy, 2), "a second connection", within=3)
        await wait_state(client, "req", "connected")

        await call(client, "PUT", "/v1/account/req/sync", {"sync": True})
        synced = await _wait_synced_after(client, "req", synced, within=3)

        async with client.app[STORE].write() as conn:
            await conn.execute(
                update(accounts).where(accounts.c.id == "req").values(sync_requested_ms=1)
            )
        await _wait_synced_after(client, "req", synced, within=3)
        assert proxy.accepted == 2


async def test_path_setting_watches_more_folders(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """``path`` adds folders: special-use names resolved with LIST, and plain paths."""
    user = await _fresh(dovecot)
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Projects/Work")
    other = await mailbox(dovecot, user)
    client = await _start(make_client, settings)
    await add_account(
        client,
        password_account("paths", user, dovecot.port, path=["\\Sent", "Projects/Work"]),
    )
    await wait_state(client, "paths", "connected")
    for folder in ("Sent", "Projects/Work"):
        await wait_until(lambda f=folder: folder_row(client, "paths", f), f"{folder} watched")
    await wait_until(lambda: _all_synced(client, "paths", 3), "every folder synced")
    await other.append("Sent", message("sent mail"))
    await other.append("Projects/Work", message("work mail"))
    await other.append("INBOX", message("inbox mail"))
    found = await wait_events(client, "paths", "messageNew", 3)
    by_subject = {e["data"]["subject"]: e for e in found}
    assert by_subject["sent mail"]["path"] == "Sent"
    assert by_subject["sent mail"]["specialUse"] == "\\Sent"
    assert by_subject["work mail"]["path"] == "Projects/Work"
    assert "specialUse" not in by_subject["work mail"]
    assert by_subject["inbox mail"]["path"] == "INBOX"
    numbers = {parse_message_id(e["data"]["id"])[0] for e in found}
    assert len(numbers) == 3
    assert await folder_row(client, "paths", "Trash") is None
    await other.logout()


async def test_folder_created_later_is_watched_after_a_sync(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """With ``path: *`` a folder created after the connect is LISTed again on a sync
    request (and every 15 minutes) and then watched."""
    user = await _fresh(dovecot)
    other = await mailbox(dovecot, user)
    client = await _start(make_client, settings)
    await add_account(client, password_account("later", user, dovecot.port, path="*"))
    await wait_state(client, "later", "connected")
    await wait_until(lambda: folder_row(client, "later", "Sent"), "Sent watched")
    await dovecot.doveadm("mailbox", "create", "-u", user.user, "Later")
    await call(client, "PUT", "/v1/account/later/sync", {"sync": True})

    async def later_synced() -> bool:
        row = await folder_row(client, "later", "Later")
        return row is not None and bool(row.synced_ms)

    await wait_until(later_synced, "the new folder watched and synced")
    await other.append("Later", message("late mail"))
    (event,) = await wait_events(client, "later", "messageNew")
    assert event["path"] == "Later"
    await other.logout()


async def test_tls_with_ca_bundle(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, tmp_path: Path
) -> None:
    """imap.secure connects with TLS, verifying the server against imap.ca_bundle."""
    user = await _fresh(dovecot)
    assert dovecot.tls_port is not None
    bundle = write_ca(dovecot, tmp_path / "ca.pem")
    client = await _start(make_client, settings, ca_bundle=bundle)
    payload = password_account("tls", user, dovecot.tls_port)
    payload["imap"]["secure"] = True
    await add_account(client, payload)
    await wait_state(client, "tls", "connected")
    await dovecot.append(user.user, "INBOX", message("over tls"))
    (event,) = await wait_events(client, "tls", "messageNew")
    assert event["data"]["subject"] == "over tls"


async def test_account_delete_and_update_restart_or_stop_listeners(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Updating an account restarts its listeners with the new settings; deleting stops them."""
    user = await _fresh(dovecot)
    client = await _start(make_client, settings)
    supervisor = client.app[SUPERVISOR]
    payload = password_account("upd", user, dovecot.port)
    payload["imap"]["auth"]["pass"] = "wrong"
    await add_account(client, payload)
    await wait_state(client, "upd", "authenticationError")
    await call(client, "PUT", "/v1/account/upd", {"imap": {"auth": {"pass": user.password}}})
    await wait_state(client, "upd", "connected")
    assert "upd" in supervisor.watchers
    await call(client, "DELETE", "/v1/account/upd")
    await wait_until(
        lambda: asyncio.sleep(0, result="upd" not in supervisor.watchers), "listeners stopped"
    )


class _proxy:
    """``async with _proxy(dovecot) as proxy``: a proxy in front of Dovecot's port (it counts
    the connections it accepted)."""

    def __init__(self, server: DovecotServer) -> None:
        self.proxy = TcpProxy(server.host, server.port)

    async def __aenter__(self) -> TcpProxy:
        await self.proxy.start()
        return self.proxy

    async def __aexit__(self, *exc: object) -> None:
        await self.proxy.stop()


def _at_least(proxy: TcpProxy, count: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return proxy.accepted >= count

    return check


async def _all_synced(client: TestClient, account: str, count: int) -> bool:
    async with client.app[STORE].read() as conn:
        rows = (
            await conn.execute(
                select(imap_folders.c.synced_ms).where(imap_folders.c.account == account)
            )
        ).all()
    return len(rows) == count and all(r.synced_ms for r in rows)


async def _wait_synced_after(client: TestClient, account: str, since: int, within: float) -> int:
    async def check() -> int | None:
        row = await folder_row(client, account)
        return int(row.synced_ms) if row.synced_ms > since else None

    result: int = await wait_until(check, "a sync", within)
    return result


async def test_new_mail_reaches_a_webhook_route_signed(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """APPEND -> the stored messageNew is POSTed to a route, both signatures verified."""
    user = await _fresh(dovecot)
    client = await make_client(loopback_settings(relay_settings(settings)))
    async with Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET) as rx:
        await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
        route = await call(
            client, "POST", "/v1/webhooks", {"url": rx.url, "events": ["messageNew"]}, status=201
        )
        rx.secret = route["secret"]
        await add_account(client, password_account("hook", user, dovecot.port))
        await wait_state(client, "hook", "connected")
        await dovecot.append(user.user, "INBOX", message("to the webhook"))
        await rx.wait_for(1, timeout=WAIT)
        (delivery,) = rx.accepted()
        assert delivery.standard_ok
        assert delivery.ee_ok
        body = delivery.json()
        assert body["event"] == "messageNew"
        assert body["account"] == "hook"
        assert body["path"] == "INBOX"
        assert body["data"]["subject"] == "to the webhook"
        (stored,) = await stored_events(client, "hook", "messageNew")
        assert stored["data"] == body["data"]


async def test_one_node_per_account_and_takeover(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, engine_name: str
) -> None:
    """Two relays on one store: only the node the assignment names watches an account (the
    first hands it over when the second joins, if it is the second's); when that node stops,
    the other takes over and new mail is reported once."""
    if engine_name == "sqlite":
        # Several nodes share a store on PostgreSQL; one SQLite file is one node's store.
        pytest.skip("several nodes need PostgreSQL")
    user = await _fresh(dovecot)
    config = relay_settings(settings)
    node_a = await make_client(config)
    await add_account(node_a, password_account("ha", user, dovecot.port))
    await wait_state(node_a, "ha", "connected")
    node_b = await make_client(config)
    nodes = {client.app[NODE]: client for client in (node_a, node_b)}
    owner_id = assign(["ha"], nodes)["ha"]
    owner = nodes.pop(owner_id)
    (other,) = nodes.values()
    await wait_until(
        lambda: asyncio.sleep(0, result="ha" in owner.app[SUPERVISOR].watchers), "the split"
    )
    await dovecot.append(user.user, "INBOX", message("while both run"))
    await wait_events(node_b, "ha", "messageNew")
    await asyncio.sleep(4 * config.imap.scan_interval)
    assert "ha" in owner.app[SUPERVISOR].watchers
    assert "ha" not in other.app[SUPERVISOR].watchers

    await owner.close()
    await wait_until(
        lambda: asyncio.sleep(0, result="ha" in other.app[SUPERVISOR].watchers), "a takeover"
    )
    await wait_state(other, "ha", "connected")
    await dovecot.append(user.user, "INBOX", message("after the takeover"))
    await wait_events(other, "ha", "messageNew", 2)
    await settle()
    found = await stored_events(other, "ha", "messageNew")
    assert Counter(subjects(found)) == {"while both run": 1, "after the takeover": 1}


async def test_server_without_idle_is_polled(
    no_idle_dovecot: DovecotServer, make_client: MakeClient, settings: Settings
) -> None:
    """Without IDLE the listener polls with NOOP (every idle_restart s at most) and still
    reports each change once."""
    server, user = no_idle_dovecot, PLAIN
    client = await _start(make_client, settings, idle_restart=0.3)
    await add_account(client, password_account("poll", user, server.port))
    await wait_state(client, "poll", "connected")
    other = await mailbox(server, user)
    assert "IDLE" not in other.capabilities
    uid = (await other.append("INBOX", message("polled"))).uid
    (new,) = await wait_events(client, "poll", "messageNew")
    assert new["data"]["uid"] == uid
    await other.uid_store(uid, "+FLAGS.SILENT", ["\\Deleted"])
    await other.expunge()
    await wait_events(client, "poll", "messageDeleted")
    await other.logout()
    await settle()
    assert len(await stored_events(client, "poll", "messageNew")) == 1
    assert len(await stored_events(client, "poll", "messageDeleted")) == 1


async def test_new_mail_fetch_is_pipelined_behind_done(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """On new mail the listener writes its UID FETCH right behind DONE: the command goes out
    before IDLE's tagged OK comes back (one round trip per message, not two)."""
    user = await _fresh(dovecot)
    # No poller round while the mail arrives: the listener is idling then.
    client = await _start(make_client, settings, poll_interval=3600.0)
    with structlog.testing.capture_logs() as logs:

        def protocol() -> list[tuple[str, str]]:
            return [
                (e["event"], e["line"])
                for e in logs
                if e.get("account") == "pipe" and e.get("protocol") == "imap" and "line" in e
            ]

        async def idling() -> bool:
            return any(
                kind == "imap response" and line.startswith("+") for kind, line in protocol()
            )

        await add_account(client, password_account("pipe", user, dovecot.port, logs=True))
        await wait_until(idling, "the listener's IDLE")
        await dovecot.append(user.user, "INBOX", message("pipelined"))
        (event,) = await wait_events(client, "pipe", "messageNew")
    assert event["data"]["subject"] == "pipelined"
    lines = protocol()
    fetch = next(
        i
        for i, (kind, line) in enumerate(lines)
        if kind == "imap command" and " UID FETCH " in line and "ENVELOPE" in line
    )
    idle = max(
        i
        for i, (kind, line) in enumerate(lines[:fetch])
        if kind == "imap command" and line.endswith(" IDLE")
    )
    idle_tag = lines[idle][1].split(" ", 1)[0]
    completed = next(
        i
        for i, (kind, line) in enumerate(lines)
        if kind == "imap response" and line.startswith(idle_tag + " ")
    )
    assert idle < fetch < completed, lines[idle:]
