"""SMTP connections kept between messages: reuse, refusals, and servers that hang up."""

from __future__ import annotations

import asyncio

import pytest

from relay.config import Settings
from tests.conftest import MakeClient
from tests.peers.smtp import SmtpPeer
from tests.sources.imap.relay_support import stored_events, wait_events

from .conftest import CountingProxy, add_password_account, outbox_entry, send_settings, submit

TO = {"to": [{"address": "rita@example.net"}], "subject": "Hello"}


async def test_messages_of_an_account_share_one_connection(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer, proxy: CountingProxy
) -> None:
    """Five messages sent one after another go over a single connection and login."""
    client = await make_client(send_settings(settings, concurrency=1))
    await add_password_account(client, smtp, port=proxy.port)
    for i in range(5):
        await submit(client, {**TO, "text": f"n{i}"})
    received = await smtp.wait_for(5)
    assert sorted(r.data.decode().split("\r\n\r\n", 1)[1].strip() for r in received) == [
        f"n{i}" for i in range(5)
    ]
    assert {r.login for r in received} == {"me@example.com"}
    assert proxy.accepted == 1


async def test_a_refused_message_leaves_the_connection_usable(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer, proxy: CountingProxy
) -> None:
    """After a 550 to DATA the envelope is reset and the next message uses the same connection."""
    client = await make_client(send_settings(settings, concurrency=1))
    await add_password_account(client, smtp, port=proxy.port)
    smtp.replies.append("550 5.1.1 Mailbox unavailable")
    doomed = await submit(client, {**TO, "text": "doomed"})
    await wait_events(client, "acct", "messageFailed")
    fine = await submit(client, {**TO, "text": "fine"})
    (got,) = await smtp.wait_for(1)
    assert got.message_id == fine["messageId"]
    assert (await outbox_entry(client, doomed["queueId"]))["status"] == "failed"
    assert proxy.accepted == 1


@pytest.mark.parametrize("when", ["idle", "at MAIL FROM"])
async def test_a_connection_the_server_closed_is_replaced_without_a_failed_attempt(
    make_client: MakeClient,
    settings: Settings,
    smtp: SmtpPeer,
    proxy: CountingProxy,
    when: str,
) -> None:
    """A kept connection closed by the server: the next message goes over a new one, first try."""
    client = await make_client(send_settings(settings, concurrency=1))
    await add_password_account(client, smtp, port=proxy.port)
    await submit(client, {**TO, "text": "first"})
    await smtp.wait_for(1)
    await wait_events(client, "acct", "messageSent")
    if when == "idle":
        proxy.cut()
        await asyncio.sleep(0.05)
    else:
        proxy.hang_up_next = True
    second = await submit(client, {**TO, "text": "second"})
    received = await smtp.wait_for(2)
    assert received[1].message_id == second["messageId"]
    await wait_events(client, "acct", "messageSent", count=2)
    assert await stored_events(client, "acct", "messageDeliveryError") == []
    assert (await outbox_entry(client, second["queueId"]))["attemptsMade"] == 1
    assert proxy.accepted == 2
