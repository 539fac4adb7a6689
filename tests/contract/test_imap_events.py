"""EmailEngine's shapes on the events of an IMAP account, produced by a real Dovecot (one for
the module): message, folder, connection and account events, as stored and as delivered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.contract.shapes import ROUTES, assert_event, assert_shape
from tests.events.test_reports import ARF, POSTFIX
from tests.peers.dovecot import DovecotServer, dovecot_server, free_port
from tests.peers.receiver import Receiver
from tests.sources.imap.relay_support import (
    WAIT,
    password_account,
    relay_settings,
    stored_events,
    wait_events,
    wait_state,
)
from tests.sources.imap.support import Account, message, new_account, user_pool
from tests.webhooks.conftest import SERVICE_SECRET, loopback_settings

# Everything messageNew can carry: names, Cc, Reply-To, In-Reply-To, text and HTML bodies,
# an inline image and an attachment.
RICH = (
    b"From: Rita Example <rita@example.net>\r\nTo: Ann <ann@example.com>\r\n"
    b"Cc: Carl <carl@example.com>\r\nReply-To: Desk <desk@example.net>\r\n"
    b"Subject: Contract\r\nMessage-ID: <contract-1@example.net>\r\n"
    b"In-Reply-To: <earlier@example.com>\r\nDate: Mon, 17 Oct 2022 09:42:07 +0300\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
    b'--m\r\nContent-Type: multipart/related; boundary="r"\r\n\r\n'
    b'--r\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
    b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Ann\r\n"
    b"--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p>Hello <img src="cid:logo@example.net"></p>\r\n--a--\r\n'
    b"--r\r\nContent-Type: image/png\r\nContent-ID: <logo@example.net>\r\n"
    b"Content-Disposition: inline; filename=logo.png\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n"
    b"--m\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="terms.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--m--\r\n"
)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot for the module."""
    with dovecot_server(users=user_pool()) as server:
        yield server


async def _watching(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer, user: Account
) -> TestClient:
    """A relay with the listeners on and ``user``'s account ``acct`` connected."""
    client = await make_client(loopback_settings(relay_settings(settings)))
    await call(client, "POST", "/v1/account", password_account("acct", user, dovecot.port))
    await wait_state(client, "acct", "connected")
    return client


async def _one(client: TestClient, event: str) -> dict[str, Any]:
    (payload,) = (await wait_events(client, "acct", event))[:1]
    return payload


async def test_account_added_and_the_post_answer(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """POST /v1/account answers {account, state}; the account is an accountAdded."""
    payload = password_account("acct", new_account(dovecot), dovecot.port)
    client = await make_client(settings)
    answer = await call(client, "POST", "/v1/account", payload)
    assert_shape(ROUTES["accountCreated"], answer)
    assert answer["state"] == "new"
    assert (await call(client, "POST", "/v1/account", payload))["state"] == "existing"
    assert_event(await _one(client, "accountAdded"), "accountAdded")


async def test_account_deleted(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """DELETE /v1/account/{account} is an accountDeleted."""
    payload = password_account("acct", new_account(dovecot), dovecot.port)
    client = await make_client(settings)
    await call(client, "POST", "/v1/account", payload)
    await call(client, "DELETE", "/v1/account/acct")
    assert_event(await _one(client, "accountDeleted"), "accountDeleted")


async def test_authentication_success_and_account_initialized(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """The first login and the first listing of the folders."""
    client = await _watching(make_client, settings, dovecot, new_account(dovecot))
    assert_event(await _one(client, "authenticationSuccess"), "authenticationSuccess")
    assert_event(await _one(client, "accountInitialized"), "accountInitialized")


async def test_message_new_stored_and_delivered(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """messageNew as stored, and as the global webhook (POST /v1/settings) delivers it with
    text and headers (notifyText, notifyHeaders)."""
    user = new_account(dovecot)
    client = await _watching(make_client, settings, dovecot, user)
    async with Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET) as rx:
        answer = await call(
            client,
            "POST",
            "/v1/settings",
            {
                "webhooks": rx.url,
                "webhookEvents": ["messageNew"],
                "serviceSecret": SERVICE_SECRET,
                "notifyText": True,
                "notifyHeaders": ["*"],
            },
        )
        rx.secret = answer["webhooksSecret"]
        await dovecot.append(user.user, "INBOX", RICH)
        await rx.wait_for(1, timeout=WAIT)
        (delivery,) = rx.accepted()
    delivered = delivery.json()
    assert_event(delivered, "messageNew")
    assert delivered["data"]["text"]["plain"].startswith("Hello Ann")
    assert delivered["data"]["headers"]["subject"] == ["Contract"]
    assert_event(await _one(client, "messageNew"), "messageNew")


async def test_message_updated_and_deleted(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A flag set and a deletion through the API come back from the server as events."""
    user = new_account(dovecot)
    client = await _watching(make_client, settings, dovecot, user)
    await dovecot.append(user.user, "INBOX", message("to change"))
    new = await _one(client, "messageNew")
    path = f"/v1/account/acct/message/{new['data']['id']}"
    await call(client, "PUT", path, {"flags": {"add": ["\\Flagged"]}})
    updated = await _one(client, "messageUpdated")
    assert_event(updated, "messageUpdated")
    assert "\\Flagged" in updated["data"]["changes"]["flags"]["value"]
    await call(client, "DELETE", f"{path}?force=true")
    assert_event(await _one(client, "messageDeleted"), "messageDeleted")


async def test_mailbox_reset(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A new UIDVALIDITY is a mailboxReset."""
    user = new_account(dovecot)
    client = await _watching(make_client, settings, dovecot, user)
    await dovecot.append(user.user, "INBOX", message("before"))
    await _one(client, "messageNew")
    await dovecot.doveadm("mailbox", "update", "--uid-validity", "4242", "-u", user.user, "INBOX")
    await dovecot.kick(user.user)
    reset = await _one(client, "mailboxReset")
    assert_event(reset, "mailboxReset")
    assert reset["data"]["uidValidity"] == "4242"


async def test_authentication_error(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A refused password is an authenticationError."""
    payload = password_account("acct", new_account(dovecot), dovecot.port)
    payload["imap"]["auth"]["pass"] = "wrong"
    client = await make_client(relay_settings(settings))
    await call(client, "POST", "/v1/account", payload)
    await wait_state(client, "acct", "authenticationError")
    assert_event(await _one(client, "authenticationError"), "authenticationError")


async def test_connect_error(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A server that cannot be reached is a connectError."""
    payload = password_account("acct", new_account(dovecot), free_port())
    client = await make_client(relay_settings(settings))
    await call(client, "POST", "/v1/account", payload)
    await wait_state(client, "acct", "connectError")
    assert_event(await _one(client, "connectError"), "connectError")
    assert await stored_events(client, "acct", "authenticationError") == []


async def test_bounce_and_complaint(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A delivery report and a feedback report arriving in INBOX: messageBounce and
    messageComplaint in EmailEngine's shapes."""
    user = new_account(dovecot)
    client = await _watching(make_client, settings, dovecot, user)
    await dovecot.append(user.user, "INBOX", POSTFIX)
    await dovecot.append(user.user, "INBOX", ARF)
    assert_event(await _one(client, "messageBounce"), "messageBounce")
    assert_event(await _one(client, "messageComplaint"), "messageComplaint")


async def test_mailbox_new_and_deleted(
    make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """A folder created and deleted after the first listing: mailboxNew and mailboxDeleted."""
    user = new_account(dovecot)
    client = await _watching(make_client, settings, dovecot, user)
    await wait_events(client, "acct", "accountInitialized")
    await call(client, "POST", "/v1/account/acct/mailbox", {"path": "Contracts"})
    await call(client, "PUT", "/v1/account/acct/sync", {"sync": True})
    assert_event(await _one(client, "mailboxNew"), "mailboxNew")
    await call(client, "DELETE", "/v1/account/acct/mailbox?path=Contracts")
    await call(client, "PUT", "/v1/account/acct/sync", {"sync": True})
    assert_event(await _one(client, "mailboxDeleted"), "mailboxDeleted")
