"""Replies and forwards by reference: the original read through the mailbox layer (Dovecot),
the reply sent through a real SMTP server, and the original flagged afterwards."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.policy import default

import pytest
from aiohttp.test_utils import TestClient

from relay.config import MailboxSettings, Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.mailbox.mail import PLAIN, rich_message
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import SmtpPeer
from tests.send.conftest import PASSWORD, send_settings, submit
from tests.sources.imap.relay_support import relay_settings, wait_events, wait_state, wait_until
from tests.sources.imap.support import Account, new_account, user_pool


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot for this module's accounts."""
    with dovecot_server(users=user_pool()) as server:
        yield server


@pytest.fixture
def user(dovecot: DovecotServer) -> Account:
    return new_account(dovecot)


@pytest.fixture
async def smtp(user: Account) -> AsyncIterator[SmtpPeer]:
    peer = await SmtpPeer(passwords={user.user: PASSWORD}).start()
    yield peer
    await peer.stop()


async def _relay(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
) -> TestClient:
    settings = dataclasses.replace(settings, mailbox=MailboxSettings(pool_idle=0.2))
    client = await make_client(send_settings(relay_settings(settings)))
    await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": "desk",
            "name": "Support",
            "email": user.user,
            "imap": {
                "host": "127.0.0.1",
                "port": dovecot.port,
                "secure": False,
                "auth": {"user": user.user, "pass": user.password},
            },
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp.port,
                "secure": False,
                "auth": {"user": user.user, "pass": PASSWORD},
            },
        },
    )
    await wait_state(client, "desk", "connected")
    return client


def _original(user: Account) -> bytes:
    raw, _ = rich_message("Printer on fire", attachment_size=2000, to=user.user)
    head, _, rest = raw.partition(b"\r\n\r\n")
    extra = (
        b"Cc: Bob <bob@example.net>, " + user.user.encode() + b"\r\n"
        b"Reply-To: Rita Desk <rita.desk@example.net>\r\n"
        b"References: <older@example.net>\r\n"
    )
    return head + b"\r\n" + extra + b"\r\n" + rest


@pytest.mark.slow
async def test_reply_fills_recipients_subject_and_threading_and_flags_the_original(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
) -> None:
    """A reply by reference goes to the original's Reply-To with "Re:", In-Reply-To and
    References, quotes the original's text inline, and the original gets \\Answered."""
    client = await _relay(make_client, settings, dovecot, smtp, user)
    await dovecot.append(user.user, "INBOX", _original(user))
    (new,) = await wait_events(client, "desk", "messageNew")
    original = new["data"]

    await submit(
        client,
        {"text": "We are on it.", "reference": {"message": original["id"], "inline": True}},
        account="desk",
    )
    (sent,) = await smtp.wait_for(1)
    reply = message_from_bytes(sent.data, policy=default)
    assert sent.rcpt_tos == ["rita.desk@example.net"]
    assert str(reply["Subject"]) == "Re: Printer on fire"
    assert str(reply["In-Reply-To"]) == original["messageId"]
    assert str(reply["References"]).split() == ["<older@example.net>", original["messageId"]]
    body = reply.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert text.startswith("We are on it.")
    assert "> " + PLAIN.splitlines()[0] in text

    (updated,) = await wait_events(client, "desk", "messageUpdated")
    assert updated["data"]["id"] == original["id"]
    assert updated["data"]["changes"]["flags"]["added"] == ["\\Answered"]


async def test_reply_all_forward_and_a_missing_original(
    make_client: MakeClient,
    settings: Settings,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    user: Account,
) -> None:
    """reply-all adds the other recipients but the account itself; a forward carries the
    original's attachments; a missing original is a 404 unless ignoreMissing; a mismatching
    messageId counts as missing; In-Reply-To may also come as a header."""
    client = await _relay(make_client, settings, dovecot, smtp, user)
    await dovecot.append(user.user, "INBOX", _original(user))
    (new,) = await wait_events(client, "desk", "messageNew")
    original = new["data"]

    await submit(
        client,
        {"text": "All of you.", "reference": {"message": original["id"], "action": "reply-all"}},
        account="desk",
    )
    (first,) = await smtp.wait_for(1)
    headers = message_from_bytes(first.data, policy=default)
    assert str(headers["To"]) == "Rita Desk <rita.desk@example.net>"
    assert "bob@example.net" in str(headers["Cc"])
    assert user.user not in str(headers["Cc"])

    await submit(
        client,
        {
            "to": [{"address": "vendor@example.org"}],
            "text": "See below.",
            "reference": {
                "message": original["id"],
                "action": "forward",
                "forwardAttachments": True,
            },
        },
        account="desk",
    )
    second = (await smtp.wait_for(2))[1]
    forward = message_from_bytes(second.data, policy=default)
    assert str(forward["Subject"]) == "Fwd: Printer on fire"
    assert forward["In-Reply-To"] is None
    names = sorted(part.get_filename() for part in forward.iter_attachments())
    assert names == ["logo.png", "report.bin"]

    async def both_flags() -> bool:
        found = await call(client, "GET", f"/v1/account/desk/message/{original['id']}")
        return {"$Forwarded", "\\Answered"} <= set(found["flags"])

    await wait_until(both_flags, "the original to be answered and forwarded")

    missing = {"message": "AAAAAQAAAAEAAAPn", "action": "reply"}
    answer = await submit(client, {"text": "?", "reference": missing}, account="desk", status=404)
    assert (answer["code"], answer["field"]) == ("MessageNotFound", "reference.message")
    wrong = {"message": original["id"], "messageId": "<someone-else@example.net>"}
    await submit(client, {"text": "?", "reference": wrong}, account="desk", status=404)
    await submit(
        client,
        {
            "to": [{"address": "rita@example.net"}],
            "text": "anyway",
            "headers": {"In-Reply-To": "<chosen@example.net>"},
            "reference": {**missing, "ignoreMissing": True},
        },
        account="desk",
    )
    third = (await smtp.wait_for(3))[2]
    assert str(message_from_bytes(third.data, policy=default)["In-Reply-To"]) == (
        "<chosen@example.net>"
    )
