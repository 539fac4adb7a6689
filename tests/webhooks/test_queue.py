"""Queue behaviour: retries never starve first attempts, pruning, per-account routes, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from relay.api.keys import STORE
from relay.config import Settings
from relay.events.model import Event
from relay.store import Store
from relay.store import deliveries as queue
from relay.store import events as events_store
from relay.store.engine import now_ms
from relay.store.schema import deliveries, events
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.receiver import Receiver, slow
from tests.webhooks.conftest import SERVICE_SECRET, Setup, make_setup


@pytest.fixture
async def narrow(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    """A relay with only four delivery slots and a route that only takes account 'b'."""
    route = {"accounts": ["b"]}
    async for setup in make_setup(
        make_client, settings, route, concurrency=4, batch_size=4, route_concurrency=4
    ):
        yield setup


async def test_retries_do_not_starve_first_attempts(narrow: Setup) -> None:
    """With a backlog of due retries on a failing route, a new event elsewhere still goes out."""
    async with Receiver(secret="whsec_" + "B" * 44, default_status=500) as failing:
        await call(
            narrow.client,
            "POST",
            "/v1/webhooks",
            {"url": failing.url, "accounts": ["a"], "retrySchedule": [0] + [0.01] * 29},
            status=201,
        )
        await narrow.emit(40, account="a")
        await failing.wait_for_requests(80, timeout=20)
        (event_id,) = await narrow.emit(1, account="b")
        await narrow.rx.wait_for(1, timeout=20)
        assert narrow.rx.ids() == [event_id]
        async with narrow.client.app[STORE].read() as conn:
            waiting = await conn.scalar(
                select(func.count())
                .select_from(deliveries)
                .where(deliveries.c.status != "delivered")
            )
        assert waiting  # the failing route's retries were still queued


async def test_prune_removes_old_finished_only(narrow: Setup) -> None:
    """Pruning deletes finished deliveries (and unreferenced events) older than the cut-off."""
    await narrow.emit(3, account="b")
    await narrow.rx.wait_for(3)
    await call(narrow.client, "PUT", f"/v1/webhooks/{narrow.route['id']}", {"enabled": False})
    (pending_event,) = await narrow.emit(1, account="b")
    store = narrow.client.app[STORE]
    async with asyncio.timeout(10):
        while True:
            async with store.read() as conn:
                done = await conn.scalar(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.status == "delivered")
                )
            if done == 3:
                break
            await asyncio.sleep(0.05)
    async with store.write() as conn:
        removed = await queue.prune(conn, before_ms=now_ms() + 1000)
    assert removed == 3
    async with store.read() as conn:
        left = (await conn.execute(select(deliveries.c.event_id))).scalars().all()
        kept_events = (await conn.execute(select(events.c.id))).scalars().all()
    assert left == [pending_event]
    assert pending_event in kept_events
    assert len(kept_events) == 1


async def test_account_webhooks_url_gets_its_events(narrow: Setup) -> None:
    """An account's own webhooks URL receives that account's events (EmailEngine compatible)."""
    async with Receiver(secret="whsec_" + "C" * 44, service_secret=SERVICE_SECRET) as own:
        body = {
            "account": "acct-own",
            "name": "Own",
            "email": "own@example.com",
            "imap": {"host": "127.0.0.1", "auth": {"user": "u", "pass": "p"}},
            "webhooks": own.url,
        }
        await call(narrow.client, "POST", "/v1/account", body)
        await own.wait_for_requests(1)
        first = own.requests[0]
        assert first.ee_ok
        assert first.json()["event"] == "accountAdded"
        assert first.json()["account"] == "acct-own"
        await narrow.emit(1, account="someone-else")
        await call(narrow.client, "DELETE", "/v1/account/acct-own")
        await own.wait_for_requests(2)
        assert [r.json()["event"] for r in own.requests] == ["accountAdded", "accountDeleted"]


async def test_delivery_metrics(narrow: Setup) -> None:
    """Prometheus exposes delivered counts and the queue depth."""
    await narrow.emit(2, account="b")
    await narrow.rx.wait_for(2)
    async with asyncio.timeout(10):
        while True:
            text = await (await narrow.client.get("/metrics")).text()
            if 'relay_webhook_deliveries_total{outcome="delivered"} 2.0' in text:
                break
            await asyncio.sleep(0.05)
    assert "relay_webhook_delivery_seconds_count 2.0" in text
    assert 'relay_webhook_queue{status="pending"}' in text


async def test_events_recorded_without_routes(narrow: Setup) -> None:
    """Events are stored even when no route wants them (nothing to deliver, nothing lost)."""
    await call(narrow.client, "DELETE", f"/v1/webhooks/{narrow.route['id']}")
    store = narrow.client.app[STORE]
    batch = [Event("messageNew", "b", {}, now_ms())]
    async with store.write() as conn:
        await events_store.record(conn, batch, default_service_url="https://x.example.com")
    async with store.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(events)) == 1


async def test_shutdown_drains_running_attempts(narrow: Setup, settings: Settings) -> None:
    """Stopping the relay lets a running attempt finish and records its outcome."""
    narrow.rx.respond(slow(0.5))
    (event_id,) = await narrow.emit(1, account="b")
    await narrow.rx.wait_for_requests(1)
    await narrow.client.close()
    store = await asyncio.to_thread(Store.open, settings.store)
    try:
        async with store.read() as conn:
            row = (
                (await conn.execute(select(deliveries).where(deliveries.c.event_id == event_id)))
                .mappings()
                .one()
            )
    finally:
        await store.close()
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
