"""IMAP accounts against a real Dovecot: messageBounce and messageComplaint after the
messageNew of a report in INBOX (main and shared mailboxes), and messageNew's path and
seemsLikeNew."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from relay.config import Settings
from tests.api.helpers import add_app
from tests.conftest import MakeClient
from tests.events.test_reports import ARF, EXCHANGE, HOTMAIL_JMRP, POSTFIX
from tests.peers.dovecot import DovecotServer

from .relay_support import (
    add_account,
    folder_row,
    fresh_account,
    mailbox,
    password_account,
    relay_settings,
    settle,
    stored_events,
    wait_events,
    wait_state,
    wait_until,
)

POSTFIX_ID = "<305eabf4@example.com>"


_fresh = fresh_account


def _message(subject: str, message_id: str | None) -> bytes:
    header = f"From: ann@example.com\r\nTo: bob@example.com\r\nSubject: {subject}\r\n"
    if message_id:
        header += f"Message-ID: {message_id}\r\n"
    return (header + "\r\nHello\r\n").encode()


def _followers(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """messageNew id -> the events stored right after it (before the next messageNew)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for envelope in found:
        if envelope["event"] == "messageNew":
            current = out.setdefault(envelope["data"]["id"], [])
        elif envelope["event"] in ("messageBounce", "messageComplaint") and current is not None:
            current.append(envelope)
    return out


async def test_bounces_and_complaints_follow_their_message_new(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """DSNs (Postfix, Exchange with two failed recipients) and feedback reports (ARF,
    Hotmail's) delivered into INBOX: each messageNew has isBounce / isComplaint and is
    followed by its messageBounce / messageComplaint events, whose envelope has no path and
    whose data has EmailEngine's fields; the same DSN in another folder is only a messageNew."""
    user = await _fresh(dovecot)
    client = await make_client(relay_settings(settings))
    await add_account(client, password_account("rep", user, dovecot.port, path=["\\Junk"]))
    await wait_state(client, "rep", "connected")
    await wait_until(lambda: folder_row(client, "rep", "Junk"), "Junk watched")
    for raw in (POSTFIX, EXCHANGE, ARF, HOTMAIL_JMRP):
        await dovecot.append(user.user, "INBOX", raw)
    await dovecot.append(user.user, "Junk", POSTFIX)
    await wait_events(client, "rep", "messageNew", 5)
    await wait_events(client, "rep", "messageBounce", 3)
    await wait_events(client, "rep", "messageComplaint", 2)
    await settle()
    found = await stored_events(client, "rep")
    news = {e["data"]["id"]: e for e in found if e["event"] == "messageNew"}
    followers = _followers(found)
    by_subject = {e["data"].get("subject"): e["data"] for e in news.values()}

    postfix = next(e["data"] for e in news.values() if e["path"] == "INBOX" and _is(e, POSTFIX_ID))
    assert postfix["isBounce"] is True
    assert postfix["relatedMessageId"] == POSTFIX_ID
    (bounce,) = followers[postfix["id"]]
    assert "path" not in bounce
    assert "specialUse" not in bounce
    assert bounce["account"] == "rep"
    data = bounce["data"]
    headers = data.pop("messageHeaders")
    assert data == {
        "bounceMessage": postfix["id"],
        "recipient": "missing@example.net",
        "action": "failed",
        "response": {
            "source": "smtp",
            "message": "550 5.1.1 <missing@example.net>: Recipient address rejected: User"
            " unknown in virtual mailbox table",
            "status": "5.1.1",
        },
        "mta": "mx.example.net",
        "queueId": "9441D8220E",
        "messageId": POSTFIX_ID,
    }
    assert headers["subject"] == ["=?UTF-8?Q?Gr=C3=BC=C3=9Fe?="]
    assert headers["message-id"] == [POSTFIX_ID]
    assert headers["return-path"] == ["<ann@example.com>"]
    assert "9441D8220E" in headers["received"][0]

    exchange = by_subject["Undeliverable: Quarterly report"]
    assert [
        (b["data"]["recipient"], b["data"]["response"]["status"]) for b in followers[exchange["id"]]
    ] == [("missing@fabrikam.com", "5.1.10"), ("full@fabrikam.com", "5.2.2")]

    arf = by_subject["FBL Notification"]
    assert arf["isComplaint"] is True
    assert arf["relatedMessageId"] == "<abc123@sender.example.com>"
    (complaint,) = followers[arf["id"]]
    assert "path" not in complaint
    assert complaint["event"] == "messageComplaint"
    assert complaint["data"]["complaintMessage"] == arf["id"]
    assert complaint["data"]["arf"]["feedbackType"] == "abuse"
    assert complaint["data"]["arf"]["originalRcptTo"] == ["user@isp.example.com"]
    assert complaint["data"]["arf"]["arrivalDate"] == "2024-10-17T07:06:35.000Z"
    assert complaint["data"]["headers"]["subject"] == "Your weekly newsletter ✉"

    hotmail = by_subject["complaint about message from 203.0.113.42"]
    (jmrp,) = followers[hotmail["id"]]
    assert jmrp["data"]["arf"] == {
        "source": "Hotmail",
        "feedbackType": "abuse",
        "abuseType": "complaint",
        "originalMailFrom": "newsletter@sender.example.com",
        "originalRcptTo": ["user@hotmail.com"],
        "sourceIp": "203.0.113.42",
        "arrivalDate": "2024-10-17T07:06:35.021Z",
    }
    assert jmrp["data"]["headers"]["messageId"] == "<abc124@sender.example.com>"

    junk = next(e for e in news.values() if e["path"] == "Junk")
    assert "isBounce" not in junk["data"]
    assert followers[junk["data"]["id"]] == []
    assert len(await stored_events(client, "rep", "messageBounce")) == 3


def _is(envelope: dict[str, Any], related: str) -> bool:
    return bool(envelope["data"].get("relatedMessageId") == related)


async def test_shared_mailbox_bounce(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A DSN in a shared mailbox (opened with the main user's token) is a messageBounce of
    the shared account, none of the main one."""
    main = await _fresh(dovecot)
    shared = await _fresh(dovecot)
    await asyncio.to_thread(dovecot.grant, main.token, main.user, [shared.user])
    client = await make_client(relay_settings(settings))
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
    await add_account(
        client,
        {
            "account": "shared",
            "name": "Shared",
            "email": shared.user,
            "oauth2": {"auth": {"delegatedUser": shared.user, "delegatedAccount": "main"}},
        },
    )
    await wait_state(client, "shared", "connected")
    await dovecot.append(shared.user, "INBOX", POSTFIX)
    (new,) = await wait_events(client, "shared", "messageNew")
    (bounce,) = await wait_events(client, "shared", "messageBounce")
    assert new["data"]["path"] == "INBOX"
    assert bounce["data"]["bounceMessage"] == new["data"]["id"]
    assert bounce["data"]["recipient"] == "missing@example.net"
    assert await stored_events(client, "main", "messageBounce") == []


async def _seems(client: TestClient, account: str, count: int) -> list[tuple[str, str, bool]]:
    found = await wait_events(client, account, "messageNew", count)
    return [(e["path"], e["data"]["subject"], e["data"]["seemsLikeNew"]) for e in found]


async def test_seems_like_new(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """data.path is the folder; seemsLikeNew is false for a message the account saw before
    (delivered twice, or copied into another watched folder: this Dovecot has no OBJECTID,
    so the key is the Message-ID) and for any message in \\Sent, which does not count as
    seen; a message without a Message-ID is always new."""
    user = await _fresh(dovecot)
    client = await make_client(relay_settings(settings))
    await add_account(client, password_account("seen", user, dovecot.port, path=["\\Sent", "Junk"]))
    await wait_state(client, "seen", "connected")
    for folder in ("Sent", "Junk"):
        await wait_until(lambda f=folder: folder_row(client, "seen", f), f"{folder} watched")
    other = await mailbox(dovecot, user)
    first = await other.append("INBOX", _message("first", "<first@example.com>"))
    assert await _seems(client, "seen", 1) == [("INBOX", "first", True)]
    (new,) = await stored_events(client, "seen", "messageNew")
    assert list(new["data"])[:3] == ["id", "uid", "path"]
    await other.append("INBOX", _message("again", "<first@example.com>"))
    assert (await _seems(client, "seen", 2))[1] == ("INBOX", "again", False)
    assert first.uid is not None
    await other.uid_copy(first.uid, "Junk")
    assert (await _seems(client, "seen", 3))[2] == ("Junk", "first", False)
    await other.select("Sent")
    sent = await other.append("Sent", _message("sent", "<sent@example.com>"))
    assert (await _seems(client, "seen", 4))[3] == ("Sent", "sent", False)
    assert sent.uid is not None
    await other.uid_copy(sent.uid, "INBOX")
    assert (await _seems(client, "seen", 5))[4] == ("INBOX", "sent", True)
    for subject in ("bare 1", "bare 2"):
        await other.append("INBOX", _message(subject, None))
    assert [e[2] for e in (await _seems(client, "seen", 7))[5:]] == [True, True]
    await other.logout()
