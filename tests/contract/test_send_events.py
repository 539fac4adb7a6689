"""EmailEngine's shapes on the sending events and the outbox, produced by sends to a real
SMTP server (aiosmtpd) and to the sandbox's Graph sendMail."""

from __future__ import annotations

import aiohttp

from relay.config import Settings
from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import (
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    consented_main,
    sandbox_admin,
    with_microsoft,
)
from tests.conftest import MakeClient
from tests.contract.shapes import ROUTES, assert_event, assert_shape
from tests.peers.smtp import SmtpPeer
from tests.send.conftest import add_password_account, send_settings, submit
from tests.sources.imap.relay_support import stored_events, wait_events

TO = {"to": [{"name": "Rita", "address": "rita@example.net"}], "subject": "Hi", "text": "Hello"}
GRAPH_SCOPES = ["User.ReadBasic.All", "Mail.ReadWrite.Shared", "Mail.Send.Shared"]


async def test_message_sent_the_submit_answer_and_the_outbox(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A send: the submit's answer, the messageSent, and the outbox listing."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    answer = await submit(client, TO)
    assert_shape(ROUTES["submitted"], answer)
    (sent,) = await wait_events(client, "acct", "messageSent")
    assert_event(sent, "messageSent")
    listing = await call(client, "GET", "/v1/outbox")
    assert_shape(ROUTES["outbox"], listing)
    assert [m["queueId"] for m in listing["messages"]] == [answer["queueId"]]


async def test_delivery_error_that_is_retried(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A 4xx reply: messageDeliveryError with the next attempt's time, then messageSent; the
    outbox lists the message with its next attempt while it waits."""
    client = await make_client(send_settings(settings, retry_min=1.0, retry_max=1.0))
    await add_password_account(client, smtp)
    smtp.replies.append("451 4.3.0 Try again later")
    await submit(client, TO)
    (error,) = await wait_events(client, "acct", "messageDeliveryError")
    assert_event(error, "messageDeliveryError")
    assert isinstance(error["data"]["job"]["nextAttempt"], str)
    assert_shape(ROUTES["outbox"], await call(client, "GET", "/v1/outbox"))
    (sent,) = await wait_events(client, "acct", "messageSent")
    assert_event(sent, "messageSent")


async def test_delivery_error_and_failure_that_are_final(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A 5xx reply: messageDeliveryError without a next attempt, and messageFailed."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    smtp.replies.append("550 5.1.1 Mailbox unavailable")
    await submit(client, TO)
    (failed,) = await wait_events(client, "acct", "messageFailed")
    assert_event(failed, "messageFailed")
    (error,) = await stored_events(client, "acct", "messageDeliveryError")
    assert_event(error, "messageDeliveryError")
    assert error["data"]["job"]["nextAttempt"] is False
    assert error["data"]["smtpResponseCode"] == 550


async def test_graph_sends(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph sendMail: messageSent; Send As refused: messageDeliveryError and messageFailed."""
    client = await make_client(
        send_settings(with_microsoft(settings, sandbox, graph_url=sandbox.url))
    )
    await consented_main(client, http, sandbox, baseScopes="api", extraScopes=GRAPH_SCOPES)
    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await submit(client, TO, account="shared")
    (sent,) = await wait_events(client, "shared", "messageSent")
    assert_event(sent, "messageSent")
    await sandbox_admin(http, sandbox, "grants", {"user": MAIN, "mailbox": SHARED, "sendAs": False})
    await submit(client, TO, account="shared")
    (failed,) = await wait_events(client, "shared", "messageFailed")
    assert_event(failed, "messageFailed")
    (error,) = await stored_events(client, "shared", "messageDeliveryError")
    assert_event(error, "messageDeliveryError")
