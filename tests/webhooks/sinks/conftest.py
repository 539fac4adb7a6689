"""Queue sink routes against the real brokers: a reader per kind, and a relay with a route
that publishes to it.

These tests are about the brokers, not the store: they run on SQLite only (the delivery
queue they share with HTTP routes is tested on both engines in tests/webhooks).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.api.keys import STORE
from relay.config import Settings
from relay.events.model import Event
from relay.store import events as events_store
from relay.store.engine import now_ms
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.brokers import (
    AmqpReader,
    NatsReader,
    NatsServer,
    Reader,
    RedisReader,
    reachable,
)
from tests.webhooks.conftest import loopback_settings

KINDS = ["amqp", "nats", "redis"]
# Retries come quickly, so that a cut connection is made good within a test.
QUICK_RETRIES = [0, 0.2, 0.2, 0.3, 0.5, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1]


@pytest.fixture
def engine_name() -> str:
    return "sqlite"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A JetStream-enabled nats-server for this test process."""
    if shutil.which("nats-server") is None and not shutil.which("/usr/sbin/nats-server"):
        pytest.skip("nats-server is not installed (scripts/test-peers.sh installs it)")
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=KINDS)
async def reader(request: pytest.FixtureRequest) -> AsyncIterator[Reader]:
    """A fresh place on one broker to publish to and read from (removed afterwards)."""
    made = await open_reader(request, str(request.param))
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def readers(request: pytest.FixtureRequest) -> AsyncIterator[list[Reader]]:
    """One fresh place on each broker."""
    made: list[Reader] = []
    try:
        for kind in KINDS:
            made.append(await open_reader(request, kind))
        yield made
    finally:
        for one in made:
            await one.close()


async def open_reader(request: pytest.FixtureRequest, kind: str) -> Reader:
    """A reader of ``kind``; the test is skipped when its broker does not answer."""
    made: Reader
    if kind == "amqp":
        if not reachable("127.0.0.1", 5672):
            pytest.skip("RabbitMQ is not answering on 127.0.0.1:5672 (scripts/test-peers.sh)")
        made = await AmqpReader().open()
    elif kind == "redis":
        if not reachable("127.0.0.1", 6379):
            pytest.skip("Redis is not answering on 127.0.0.1:6379 (scripts/test-peers.sh)")
        made = await RedisReader().open()
    else:
        made = await NatsReader(request.getfixturevalue("nats_server")).open()
    return made


@dataclass
class SinkSetup:
    client: TestClient
    reader: Reader
    route: dict[str, Any]

    async def emit(
        self, n: int = 1, *, account: str = "acct", event: str = "messageNew"
    ) -> list[str]:
        """Store ``n`` events the way a source does; return their ids in order."""
        batch = [Event(event, account, {"n": i}, now_ms(), path="INBOX") for i in range(n)]
        async with self.client.app[STORE].write() as conn:
            await events_store.record(conn, batch, default_service_url="https://relay.example.com")
        return [e.id for e in batch]

    async def payloads(self) -> dict[str, bytes]:
        """The stored webhook body of every event, by id."""
        from sqlalchemy import select

        from relay.store.schema import events

        async with self.client.app[STORE].read() as conn:
            rows = (await conn.execute(select(events.c.id, events.c.payload))).all()
        return {str(r[0]): str(r[1]).encode() for r in rows}

    async def settled(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Wait until ``n`` deliveries are recorded delivered; return them."""
        async with asyncio.timeout(timeout):
            while True:
                done = await self.deliveries("delivered")
                if len(done) >= n:
                    return done
                await asyncio.sleep(0.05)

    async def first_error(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """Wait for the first failed attempt of a pending delivery; return its error."""
        async with asyncio.timeout(timeout):
            while True:
                pending = await self.deliveries("pending")
                if pending and pending[0]["attemptLog"]:
                    return str(pending[0]["attemptLog"][0]["error"])
                await asyncio.sleep(0.05)

    async def deliveries(self, status: str | None = None) -> list[dict[str, Any]]:
        query = f"?pageSize=1000{'&status=' + status if status else ''}"
        out = await call(self.client, "GET", f"/v1/webhooks/{self.route['id']}/deliveries{query}")
        return list(out["deliveries"])


async def sink_setup(
    make_client: MakeClient,
    settings: Settings,
    reader: Reader,
    *,
    address: tuple[str, int] | None = None,
    allow_loopback: bool = True,
    **route: Any,
) -> SinkSetup:
    """A relay with a route publishing to ``reader`` (through ``address`` when given)."""
    hooks: dict[str, Any] = {} if allow_loopback else {"allow_networks": ()}
    client = await make_client(loopback_settings(settings, **hooks))
    host, port = address or reader.address
    body = {**reader.route(host, port), "retrySchedule": QUICK_RETRIES, **route}
    created = await call(client, "POST", "/v1/webhooks", body, status=201)
    reader.secret = created["secret"]
    return SinkSetup(client, reader, created)
