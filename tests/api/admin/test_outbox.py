"""The admin UI's outbox page: messages by state with their last error, retry of a failed
one and cancel of a queued one, both through the API's endpoints and only with the form's
CSRF token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.config import Settings
from tests.api.admin.support import sign_in
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.smtp import SmtpPeer
from tests.send.conftest import add_password_account, outbox_entry, send_settings, submit
from tests.sources.imap.relay_support import wait_events

XSS = "<img src=x onerror=alert(1)>"
TO = {"to": [{"address": "rita@example.net"}]}


async def test_a_failed_message_is_shown_with_its_error_and_retried(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A failed message shows its state and the server's answer (escaped) under "failed";
    Retry without the form's token changes nothing, with it the message is queued again
    and sent; a sent message offers no action."""
    client = await make_client(send_settings(settings))
    csrf = await sign_in(client)
    await add_password_account(client, smtp)
    smtp.replies.append("550 5.1.1 Mailbox unavailable")
    queued = await submit(client, {**TO, "subject": XSS, "text": "x"})
    queue_id = queued["queueId"]
    await wait_events(client, "acct", "messageFailed")

    html = await (await client.get("/admin/outbox?status=failed")).text()
    assert f'data-id="{queue_id}" data-status="failed"' in html
    assert "550 5.1.1 Mailbox unavailable" in html
    assert XSS not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert f'action="/admin/outbox/{queue_id}/retry"' in html
    empty = await (await client.get("/admin/outbox?status=sent")).text()
    assert queue_id not in empty

    for forged in ({}, {"csrf": "forged"}):
        resp = await client.post(f"/admin/outbox/{queue_id}/retry", data=forged)
        assert resp.status == 403
    assert (await outbox_entry(client, queue_id))["status"] == "failed"
    resp = await client.post(
        f"/admin/outbox/{queue_id}/retry",
        data={"csrf": csrf, "status": "failed"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/admin/outbox?done=")
    assert "status=failed" in resp.headers["Location"]
    await smtp.wait_for(1)
    await wait_events(client, "acct", "messageSent")

    sent = await (await client.get("/admin/outbox?status=sent")).text()
    assert f'data-id="{queue_id}" data-status="sent"' in sent
    assert f"/admin/outbox/{queue_id}/retry" not in sent
    assert f"/admin/outbox/{queue_id}/cancel" not in sent
    # Retrying it again is the API's 409, shown as a page naming the state.
    again = await client.post(f"/admin/outbox/{queue_id}/retry", data={"csrf": csrf})
    assert again.status == 409
    assert "this one is sent" in await again.text()


async def test_a_queued_message_is_cancelled(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A message waiting for its sendAt is listed as queued and Cancel removes it."""
    client = await make_client(send_settings(settings))
    csrf = await sign_in(client)
    await add_password_account(client, smtp)
    later = datetime.now(UTC) + timedelta(hours=1)
    queued = await submit(client, {**TO, "subject": "later", "sendAt": later.isoformat()})
    queue_id = queued["queueId"]
    html = await (await client.get("/admin/outbox")).text()
    assert f'data-id="{queue_id}" data-status="queued"' in html
    assert f'action="/admin/outbox/{queue_id}/retry"' not in html
    resp = await client.post(
        f"/admin/outbox/{queue_id}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303
    await call(client, "GET", f"/v1/outbox/{queue_id}", status=404)
    assert queue_id not in await (await client.get("/admin/outbox")).text()
    missing = await client.post(f"/admin/outbox/{queue_id}/cancel", data={"csrf": csrf})
    assert missing.status == 404
