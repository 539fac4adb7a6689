"""Sending as Microsoft 365 mailboxes: XOAUTH2 over SMTP and Graph sendMail, own and shared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient

from relay.config import Settings
from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import (
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    consented_main,
    introspect,
    sandbox_admin,
    with_microsoft,
)
from tests.conftest import MakeClient
from tests.peers.smtp import SmtpPeer
from tests.sources.imap.relay_support import stored_events, wait_events

from .conftest import outbox_entry, send_settings, submit

TO = {"to": [{"address": "rita@example.net"}], "subject": "From the relay", "text": "Hello"}
GRAPH_SCOPES = ["User.ReadBasic.All", "Mail.ReadWrite.Shared", "Mail.Send.Shared"]


@pytest.fixture
async def exchange(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> AsyncIterator[SmtpPeer]:
    """An SMTP server that checks XOAUTH2 tokens and Send As with the sandbox, as Exchange does."""

    async def check(user: str, token: str) -> dict[str, Any] | None:
        return dict(await introspect(http, sandbox, token))

    peer = await SmtpPeer(check_token=check).start()
    yield peer
    await peer.stop()


async def _relay(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    exchange: SmtpPeer | None = None,
    sent_copy: str | None = None,
    **app: Any,
) -> TestClient:
    """A relay with the consented main account ``my-account`` and the shared account."""
    client = await make_client(
        send_settings(with_microsoft(settings, sandbox, graph_url=sandbox.url))
    )
    await consented_main(client, http, sandbox, **app)
    if exchange is not None:
        smtp = {"host": "127.0.0.1", "port": exchange.port, "secure": False}
        await call(client, "PUT", "/v1/account/my-account", {"smtp": smtp})
    shared = {**SHARED_PAYLOAD, **({"sentCopy": sent_copy} if sent_copy else {})}
    await call(client, "POST", "/v1/account", shared)
    return client


async def test_smtp_from_main_uses_xoauth2(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    exchange: SmtpPeer,
) -> None:
    """The main account logs in with XOAUTH2 as itself and sends from its own address."""
    client = await _relay(make_client, settings, http, sandbox, exchange)
    queued = await submit(client, TO, account="my-account")
    (got,) = await exchange.wait_for(1)
    assert (got.login, got.header_from, got.mail_from) == (MAIN, MAIN, MAIN)
    (sent,) = await wait_events(client, "my-account", "messageSent")
    assert sent["data"]["messageId"] == queued["messageId"]


async def test_smtp_from_shared_logs_in_as_main_user(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    exchange: SmtpPeer,
) -> None:
    """A shared account sends as the main user (its token) with From: the shared address."""
    client = await _relay(make_client, settings, http, sandbox, exchange)
    body = {**TO, "from": {"name": "Team", "address": SHARED}}
    await submit(client, body, account="shared")
    (got,) = await exchange.wait_for(1)
    assert got.login == MAIN
    assert (got.header_from, got.mail_from) == (SHARED, SHARED)
    (sent,) = await wait_events(client, "shared", "messageSent")
    assert sent["data"]["envelope"]["from"] == SHARED
    # The main account's own address is not the shared account's to use, nor the reverse.
    error = await submit(client, {**TO, "from": {"address": MAIN}}, account="shared", status=400)
    assert error["field"] == "from"
    error = await submit(
        client, {**TO, "from": {"address": SHARED}}, account="my-account", status=400
    )
    assert error["field"] == "from"


async def test_smtp_send_as_denied_fails(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    exchange: SmtpPeer,
) -> None:
    """Without Send As on the shared mailbox, Exchange's 550 5.7.60 fails the message at once."""
    client = await _relay(make_client, settings, http, sandbox, exchange)
    await sandbox_admin(http, sandbox, "grants", {"user": MAIN, "mailbox": SHARED, "sendAs": False})
    queued = await submit(client, TO, account="shared")
    (failed,) = await wait_events(client, "shared", "messageFailed")
    assert "5.7.60" in failed["data"]["error"]
    assert (await outbox_entry(client, queued["queueId"]))["attemptsMade"] == 1
    assert exchange.received == []


async def _graph_messages(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, mailbox: str, folder: str
) -> list[dict[str, Any]]:
    async with http.get(
        f"{sandbox.url}/sandbox/mailboxes/{mailbox}/folders/{folder}/messages"
    ) as resp:
        assert resp.status == 200, await resp.text()
        return list(await resp.json())


async def test_graph_send_from_shared(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """A Graph account sends as the shared mailbox with sendMail; the copy is in its Sent Items."""
    client = await _relay(
        make_client, settings, http, sandbox, baseScopes="api", extraScopes=GRAPH_SCOPES
    )
    queued = await submit(
        client,
        {**TO, "html": "<p>Hello</p>", "cc": [{"address": MAIN}]},
        account="shared",
    )
    (sent,) = await wait_events(client, "shared", "messageSent")
    assert sent["data"]["queueId"] == queued["queueId"]
    copies = await _graph_messages(http, sandbox, SHARED, "sentitems")
    assert [m["subject"] for m in copies] == ["From the relay"]
    assert copies[0]["from"]["emailAddress"]["address"] == SHARED
    assert await _graph_messages(http, sandbox, MAIN, "sentitems") == []
    received = await _graph_messages(http, sandbox, MAIN, "inbox")
    assert [m["subject"] for m in received] == ["From the relay"]


async def test_graph_send_as_denied_fails(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph's 403 ErrorSendAsDenied is permanent: one attempt, then messageFailed."""
    client = await _relay(
        make_client, settings, http, sandbox, baseScopes="api", extraScopes=GRAPH_SCOPES
    )
    await sandbox_admin(http, sandbox, "grants", {"user": MAIN, "mailbox": SHARED, "sendAs": False})
    queued = await submit(client, TO, account="shared")
    (failed,) = await wait_events(client, "shared", "messageFailed")
    assert "ErrorSendAsDenied" in failed["data"]["error"]
    entry = await outbox_entry(client, queued["queueId"])
    assert (entry["status"], entry["attemptsMade"]) == ("failed", 1)


async def test_graph_sent_copy_none_saves_no_copy(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """sentCopy "none" on a Graph account sends with saveToSentItems false: no copy anywhere."""
    client = await _relay(
        make_client,
        settings,
        http,
        sandbox,
        sent_copy="none",
        baseScopes="api",
        extraScopes=GRAPH_SCOPES,
    )
    await submit(client, {**TO, "cc": [{"address": MAIN}]}, account="shared")
    await wait_events(client, "shared", "messageSent")
    assert await _graph_messages(http, sandbox, SHARED, "sentitems") == []
    assert await _graph_messages(http, sandbox, MAIN, "sentitems") == []
    assert len(await _graph_messages(http, sandbox, MAIN, "inbox")) == 1


async def test_graph_token_refused_before_expiry_is_replaced(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph answers 401 to a token the relay still thinks valid (here: Graph's clock is two
    hours ahead): the attempt is retried with a fresh token, not failed."""
    client = await _relay(
        make_client, settings, http, sandbox, baseScopes="api", extraScopes=GRAPH_SCOPES
    )
    await submit(client, TO, account="shared")
    await wait_events(client, "shared", "messageSent")
    await sandbox_admin(http, sandbox, "clock", {"advanceSeconds": 2 * 3600})
    queued = await submit(client, TO, account="shared")
    await wait_events(client, "shared", "messageSent", count=2)
    (error,) = await wait_events(client, "shared", "messageDeliveryError")
    assert error["data"]["statusCode"] == 401
    assert error["data"]["errorCode"] == "InvalidAuthenticationToken"
    assert "smtpResponseCode" not in error["data"]
    entry = await outbox_entry(client, queued["queueId"])
    assert (entry["status"], entry["attemptsMade"]) == ("sent", 2)
    assert await stored_events(client, "shared", "messageFailed") == []


async def test_graph_copy_decides_save_to_sent_items(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """On a Graph account, the account's copy: false sends without a Sent Items copy and the
    submit's copy: true overrides it; sentMailPath is refused (sendMail saves to Sent Items)."""
    client = await _relay(
        make_client, settings, http, sandbox, baseScopes="api", extraScopes=GRAPH_SCOPES
    )
    await call(client, "PUT", "/v1/account/shared", {"copy": False, "logs": True})
    err = await submit(client, {**TO, "sentMailPath": "Archive"}, account="shared", status=400)
    assert err["field"] == "sentMailPath"
    with structlog.testing.capture_logs() as logs:
        await submit(client, {**TO, "subject": "No copy"}, account="shared")
        await wait_events(client, "shared", "messageSent")
        await submit(client, {**TO, "subject": "Copy", "copy": True}, account="shared")
        await wait_events(client, "shared", "messageSent", count=2)
    copies = await _graph_messages(http, sandbox, SHARED, "sentitems")
    assert [m["subject"] for m in copies] == ["Copy"]
    traced = [e for e in logs if e.get("protocol") == "graph" and e.get("account") == "shared"]
    assert [e["saveToSentItems"] for e in traced if e["event"] == "graph request"] == [False, True]
    assert [e["status"] for e in traced if e["event"] == "graph response"] == [202, 202]
