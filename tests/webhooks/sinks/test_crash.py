"""kill -9 of a relay process while it publishes a burst to each kind of broker: after a
restart every event is in each queue, and a repeat is only ever the same event again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from sqlalchemy import select

from relay.config import StoreSettings
from relay.events.model import Event
from relay.store import Store
from relay.store import events as events_store
from relay.store.engine import now_ms
from relay.store.schema import events
from tests.peers.brokers import Reader
from tests.proc import RelayProcess, free_port, relay_env
from tests.webhooks.sinks.conftest import QUICK_RETRIES

TOKEN = "sink-crash-" + "c" * 40
EVENTS = 1500


async def _store_events(url: str, service_url: str) -> dict[str, bytes]:
    store = Store.open(StoreSettings(url=url))
    try:
        batch = [Event("messageNew", f"acct{i % 3}", {"n": i}, now_ms()) for i in range(EVENTS)]
        async with store.write() as conn:
            await events_store.record(conn, batch, default_service_url=service_url)
        async with store.read() as conn:
            rows = (await conn.execute(select(events.c.id, events.c.payload))).all()
    finally:
        await store.close()
    return {str(r[0]): str(r[1]).encode() for r in rows}


async def test_kill_9_mid_burst_loses_nothing(tmp_path: Path, readers: list[Reader]) -> None:
    """1,500 events to a RabbitMQ, a NATS and a Redis route; SIGKILL once the first few
    are published, restart: every event is in every queue, each repeat (AMQP only: NATS and
    Redis de-duplicate) with the same id and body."""
    port = free_port()
    env = relay_env(
        tmp_path,
        port,
        {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "sink-crash-test-secret",
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            "RELAY_WEBHOOKS_TIMEOUT": "2",
            "RELAY_WEBHOOKS_LEASE": "3",
            "RELAY_WEBHOOKS_POLL_INTERVAL": "0.1",
            "RELAY_LOG_LEVEL": "warning",
        },
    )
    relay = RelayProcess(tmp_path, port, env)
    await asyncio.to_thread(relay.start)
    try:
        async with aiohttp.ClientSession(
            relay.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            for reader in readers:
                body = {**reader.route(*reader.address), "retrySchedule": QUICK_RETRIES}
                async with http.post("/v1/webhooks", json=body) as resp:
                    assert resp.status == 201, await resp.text()
                    reader.secret = (await resp.json())["secret"]
        stored = await _store_events(env["RELAY_STORE_URL"], relay.url)
        await readers[0].wait_for_count(EVENTS // 20)
        await asyncio.to_thread(relay.kill)
        counts = [await reader.count() for reader in readers]
        assert min(counts) < EVENTS, f"killed too late: {counts}"
        await asyncio.to_thread(relay.start)
        got = {reader.kind: await reader.wait_for(EVENTS, timeout=60) for reader in readers}
    finally:
        await asyncio.to_thread(relay.stop)
    for kind, messages in got.items():
        assert {m.id for m in messages} == set(stored), kind
        assert all(m.body == stored[m.id] for m in messages), kind
        if kind in ("nats", "redis"):
            assert len(messages) == EVENTS, f"{kind}: de-duplicated by the event id"
