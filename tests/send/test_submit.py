"""Submitting mail over SMTP with a password: the outbox, retries, failures and events."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default

from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.smtp import SmtpPeer
from tests.sources.imap.relay_support import stored_events, wait_events, wait_until

from .conftest import ME, add_password_account, outbox_entry, send_settings, submit

TO = {"to": [{"name": "Rita", "address": "rita@example.net"}], "subject": "Hello"}


async def test_submit_sends_from_own_address(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A submit is queued, sent with the account's password and reported as messageSent."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    att = base64.b64encode(b"attached bytes").decode()
    queued = await submit(
        client,
        {
            **TO,
            "bcc": [{"address": "hidden@example.org"}],
            "text": "Hi Rita",
            "html": "<p>Hi Rita</p>",
            "attachments": [{"filename": "a.txt", "content": att, "contentType": "text/plain"}],
            "headers": {"X-Campaign": "one"},
        },
    )
    assert queued["response"] == "Queued for delivery"
    (got,) = await smtp.wait_for(1)
    assert got.login == ME
    assert got.mail_from == ME
    assert got.rcpt_tos == ["rita@example.net", "hidden@example.org"]
    msg = message_from_bytes(got.data, policy=default)
    assert msg["Message-ID"] == queued["messageId"]
    assert msg["From"] == f"Me <{ME}>"
    assert "Bcc" not in msg
    assert msg["X-Campaign"] == "one"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["a.txt"]
    (sent,) = await wait_events(client, "acct", "messageSent")
    assert sent["data"]["queueId"] == queued["queueId"]
    assert sent["data"]["messageId"] == queued["messageId"]
    assert sent["data"]["response"].startswith("2.0.0 OK queued")
    assert sent["data"]["envelope"] == {
        "from": ME,
        "to": ["rita@example.net", "hidden@example.org"],
    }
    entry = await outbox_entry(client, queued["queueId"])
    assert entry["status"] == "sent"
    assert entry["attemptsMade"] == 1


async def test_from_the_account_may_not_use_is_refused(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A from address that is not the account's own is a 400 naming ``from``; nothing queued."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    body = {**TO, "from": {"address": "ceo@example.com"}, "text": "x"}
    error = await submit(client, body, status=400)
    assert error["field"] == "from"
    listing = await call(client, "GET", "/v1/outbox")
    assert listing["total"] == 0


async def test_invalid_payloads_are_refused(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """Bad addresses, no recipients, reserved headers and unknown accounts are refused."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    bad_to = await submit(client, {"to": [{"address": "not-an-address"}]}, status=400)
    assert bad_to["field"] == "to.0.address"
    none = await submit(client, {"subject": "x"}, status=400)
    assert none["field"] == "to"
    header = await submit(client, {**TO, "headers": {"Subject": "again"}}, status=400)
    assert header["field"] == "headers.Subject"
    injected = await submit(client, {**TO, "subject": "a\r\nBcc: x@example.com"}, status=400)
    assert injected["field"] == "subject"
    await submit(client, TO, account="nobody", status=404)


async def test_message_over_the_size_limit_is_413(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A message larger than send.max_message_bytes gets 413 and is not queued."""
    client = await make_client(send_settings(settings, max_message_bytes=10_000))
    await add_password_account(client, smtp)
    big = base64.b64encode(b"x" * 20_000).decode()
    error = await submit(
        client, {**TO, "attachments": [{"filename": "big", "content": big}]}, status=413
    )
    assert error["code"] == "MessageTooLarge"
    assert (await call(client, "GET", "/v1/outbox"))["total"] == 0


async def test_idempotent_resubmit_sends_once(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """The same Idempotency-Key returns the first result; another body with it is a 409."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    body = {**TO, "text": "once"}
    first = await submit(client, body, key="order-42")
    again = await submit(client, body, key="order-42")
    assert again == first
    conflict = await submit(client, {**TO, "text": "other"}, key="order-42", status=409)
    assert conflict["field"] == "Idempotency-Key"
    await smtp.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(smtp.received) == 1
    assert (await call(client, "GET", "/v1/outbox"))["total"] == 1


async def test_transient_reply_is_retried_then_sent(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A 4xx reply is a messageDeliveryError (EmailEngine's SMTP fields) with a next attempt;
    the retry is sent."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    smtp.replies.append("451 4.3.0 Try again later")
    queued = await submit(client, {**TO, "text": "retry me"})
    await smtp.wait_for(1)
    (error,) = await wait_events(client, "acct", "messageDeliveryError")
    data = error["data"]
    assert (data["errorCode"], data["smtpCommand"]) == ("EMESSAGE", "DATA")
    assert data["smtpResponseCode"] == 451
    assert data["smtpResponse"] == "451 4.3.0 Try again later"
    assert error["data"]["job"]["attemptsMade"] == 1
    assert error["data"]["job"]["nextAttempt"] is not None
    await wait_events(client, "acct", "messageSent")
    entry = await outbox_entry(client, queued["queueId"])
    assert entry["status"] == "sent"
    assert entry["attemptsMade"] == 2
    assert await stored_events(client, "acct", "messageFailed") == []


async def test_permanent_reply_fails_at_once(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A 5xx reply fails the message after one attempt: messageDeliveryError, messageFailed."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    smtp.replies.append("550 5.1.1 Mailbox unavailable")
    queued = await submit(client, {**TO, "text": "doomed"})
    (failed,) = await wait_events(client, "acct", "messageFailed")
    assert failed["data"]["queueId"] == queued["queueId"]
    assert "550" in failed["data"]["error"]
    (error,) = await stored_events(client, "acct", "messageDeliveryError")
    assert error["data"]["job"]["nextAttempt"] is False
    entry = await outbox_entry(client, queued["queueId"])
    assert entry["status"] == "failed"
    assert smtp.attempts == 1
    assert smtp.received == []


async def test_last_attempt_fails_the_message(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """Transient failures use up deliveryAttempts, then the message fails."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    smtp.replies.extend(["421 4.7.0 Busy"] * 3)
    queued = await submit(client, {**TO, "text": "x", "deliveryAttempts": 2})
    await wait_events(client, "acct", "messageFailed")
    assert len(await stored_events(client, "acct", "messageDeliveryError")) == 2
    entry = await outbox_entry(client, queued["queueId"])
    assert (entry["status"], entry["attemptsMade"]) == ("failed", 2)


async def test_send_at_in_the_future_waits(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A message with sendAt is kept queued until then, and can be deleted before."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    later = datetime.now(UTC) + timedelta(seconds=1.5)
    soon = await submit(client, {**TO, "text": "soon", "sendAt": later.isoformat()})
    never = await submit(client, {**TO, "text": "never", "sendAt": later.isoformat()})
    await asyncio.sleep(0.5)
    assert smtp.received == []
    assert (await outbox_entry(client, soon["queueId"]))["status"] == "queued"
    await call(client, "DELETE", f"/v1/outbox/{never['queueId']}")
    (got,) = await smtp.wait_for(1)
    assert got.message_id == soon["messageId"]
    assert datetime.now(UTC) >= later
    await call(client, "GET", f"/v1/outbox/{never['queueId']}", status=404)


async def test_unreachable_server_is_retried(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A refused connection is transient: the message stays queued with the error."""
    client = await make_client(send_settings(settings, retry_min=30.0, retry_max=30.0))
    await add_password_account(client, smtp)
    await smtp.stop()
    queued = await submit(client, {**TO, "text": "x"})

    async def retried() -> bool:
        entry = await outbox_entry(client, queued["queueId"])
        return entry["status"] == "queued" and entry["attemptsMade"] == 1

    await wait_until(retried, "a failed first attempt")
    entry = await outbox_entry(client, queued["queueId"])
    assert entry["lastError"]
    listing = await call(client, "GET", "/v1/outbox?account=acct")
    assert [m["queueId"] for m in listing["messages"]] == [queued["queueId"]]


async def test_an_unknown_recipient_is_an_envelope_error(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """Every recipient refused at RCPT TO: EENVELOPE, the RCPT TO reply, and the message fails."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    smtp.unknown.add("rita@example.net")
    await submit(client, {**TO, "text": "nobody home"})
    await wait_events(client, "acct", "messageFailed")
    (error,) = await stored_events(client, "acct", "messageDeliveryError")
    data = error["data"]
    assert (data["errorCode"], data["smtpCommand"], data["smtpResponseCode"]) == (
        "EENVELOPE",
        "RCPT TO",
        550,
    )
    assert data["smtpResponse"].startswith("550 5.1.1 <rita@example.net>")
    assert smtp.received == []


async def test_a_failed_message_is_retried_on_request(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """GET /v1/outbox?status= lists one state; POST /v1/outbox/{queueId}/retry queues a
    failed message again with its attempts reset and it is sent; a message that is not
    failed is a 409 naming its state, an unknown one a 404."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)
    smtp.replies.append("550 5.1.1 Mailbox unavailable")
    queued = await submit(client, {**TO, "text": "second chance"})
    await wait_events(client, "acct", "messageFailed")
    failed = await outbox_entry(client, queued["queueId"])
    assert (failed["status"], failed["attemptsMade"]) == ("failed", 1)
    assert "550" in failed["lastError"]
    only_failed = await call(client, "GET", "/v1/outbox?status=failed")
    assert [m["queueId"] for m in only_failed["messages"]] == [queued["queueId"]]
    assert (await call(client, "GET", "/v1/outbox?status=sent"))["total"] == 0
    await call(client, "GET", "/v1/outbox?status=lost", status=400)

    retried = await call(client, "POST", f"/v1/outbox/{queued['queueId']}/retry")
    assert retried == {"queueId": queued["queueId"], "status": "queued"}
    (got,) = await smtp.wait_for(1)
    assert got.message_id == queued["messageId"]
    await wait_events(client, "acct", "messageSent")
    sent = await outbox_entry(client, queued["queueId"])
    assert (sent["status"], sent["attemptsMade"]) == ("sent", 1)
    assert "lastError" not in sent

    again = await call(client, "POST", f"/v1/outbox/{queued['queueId']}/retry", status=409)
    assert again["message"].endswith("this one is sent")
    assert again["field"] == "queueId"
    await call(client, "POST", "/v1/outbox/no-such-message/retry", status=404)
