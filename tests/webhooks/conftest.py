"""A relay that may deliver to loopback, and a verifying receiver with a route pointing at it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.api.keys import STORE
from relay.config import Settings, WebhookSettings
from relay.events.model import Event
from relay.store import events as events_store
from relay.store.engine import now_ms
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.receiver import Receiver

SERVICE_SECRET = "service-secret-for-tests"


def loopback_settings(settings: Settings, **webhooks: Any) -> Settings:
    """``settings`` with loopback targets allowed and quick polling."""
    values: dict[str, Any] = {
        "allow_networks": ("127.0.0.0/8", "::1/128"),
        "poll_interval": 0.05,
        "timeout": 5.0,
        "lease": 10.0,
        **webhooks,
    }
    hooks = WebhookSettings(**values)
    return dataclasses.replace(settings, webhooks=hooks)


@dataclass
class Setup:
    client: TestClient
    rx: Receiver
    route: dict[str, Any]

    async def emit(
        self,
        n: int = 1,
        *,
        event: str = "messageNew",
        data: dict[str, Any] | None = None,
        account: str = "acct",
    ) -> list[str]:
        """Store ``n`` events the way a source does; return their ids."""
        batch = [Event(event, account, data or {"n": i}, now_ms(), path="INBOX") for i in range(n)]
        async with self.client.app[STORE].write() as conn:
            await events_store.record(conn, batch, default_service_url="https://relay.example.com")
        return [e.id for e in batch]

    async def deliveries(self, status: str | None = None) -> list[dict[str, Any]]:
        query = f"?pageSize=1000{'&status=' + status if status else ''}"
        out = await call(self.client, "GET", f"/v1/webhooks/{self.route['id']}/deliveries{query}")
        return list(out["deliveries"])


async def make_setup(
    make_client: MakeClient,
    settings: Settings,
    route: dict[str, Any] | None = None,
    **webhooks: Any,
) -> AsyncIterator[Setup]:
    client = await make_client(loopback_settings(settings, **webhooks))
    async with Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET) as rx:
        await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
        created = await call(
            client,
            "POST",
            "/v1/webhooks",
            {"url": rx.url, "headers": {"X-Custom": "yes"}, **(route or {})},
            status=201,
        )
        rx.secret = created["secret"]
        yield Setup(client, rx, created)


@pytest.fixture
async def hook(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    async for setup in make_setup(make_client, settings, {"retrySchedule": [0, 0.2, 0.2, 0.2]}):
        yield setup


def attempts_of(delivery: dict[str, Any]) -> Sequence[dict[str, Any]]:
    return list(delivery["attemptLog"])
