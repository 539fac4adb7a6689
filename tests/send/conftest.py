"""Fixtures for sending: an SMTP peer, a relay with a quick outbox, a password account."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.config import SendSettings, Settings
from tests.api.helpers import call

# The sandbox fixtures of the OAuth2 tests (sending as Microsoft 365 mailboxes uses them).
from tests.auth.conftest import _no_ca_bundle_override, http, sandbox, signer  # noqa: F401
from tests.peers.smtp import SmtpPeer

ME = "me@example.com"
PASSWORD = "smtp-password"


def send_settings(settings: Settings, **send: Any) -> Settings:
    """``settings`` with an outbox that polls and retries quickly."""
    values: dict[str, Any] = {
        "poll_interval": 0.05,
        "retry_min": 0.2,
        "retry_max": 1.0,
        "timeout": 5.0,
        "lease": 10.0,
        **send,
    }
    return dataclasses.replace(settings, send=SendSettings(**values))


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpPeer]:
    """An SMTP server that accepts ``me@example.com`` with a password."""
    peer = await SmtpPeer(passwords={ME: PASSWORD}).start()
    yield peer
    await peer.stop()


async def add_password_account(
    client: TestClient, smtp: SmtpPeer, account: str = "acct", email: str = ME
) -> None:
    """An account that sends through ``smtp`` with a password (plain, no TLS offered)."""
    await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": account,
            "name": "Me",
            "email": email,
            "imap": {"host": "127.0.0.1", "port": 1, "auth": {"user": email, "pass": "x"}},
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp.port,
                "secure": False,
                "auth": {"user": email, "pass": PASSWORD},
            },
        },
    )


async def submit(
    client: TestClient,
    body: dict[str, Any],
    *,
    account: str = "acct",
    status: int = 200,
    key: str | None = None,
) -> Any:
    """POST /v1/account/{account}/submit."""
    headers = {"Idempotency-Key": key} if key else {}
    resp = await client.post(f"/v1/account/{account}/submit", json=body, headers=headers)
    payload = await resp.json()
    assert resp.status == status, payload
    return payload


async def outbox_entry(client: TestClient, queue_id: str) -> Any:
    """GET /v1/outbox/{queueId}."""
    return await call(client, "GET", f"/v1/outbox/{queue_id}")
