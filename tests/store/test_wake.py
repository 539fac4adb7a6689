"""Committed writes wake the workers of the topic they name, and only those."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest
from sqlalchemy import text

from relay.config import StoreSettings
from relay.store import wakes
from relay.store.engine import Store, Wake


async def test_writes_wake_the_workers_of_their_topic(store_url: str) -> None:
    store = Store.open(StoreSettings(url=store_url))
    woken: Counter[str] = Counter()

    def deliveries() -> None:
        woken["deliveries"] += 1

    def outbox() -> None:
        woken["outbox"] += 1

    store.on_commit(Wake.DELIVERIES, deliveries)
    store.on_commit(Wake.OUTBOX, outbox)
    try:
        for notify in (Wake.DELIVERIES, Wake.OUTBOX, True, False):
            async with store.write(notify=notify) as conn:
                await conn.execute(text("SELECT 1"))
        assert woken == {"deliveries": 2, "outbox": 2}
        store.off_commit(Wake.OUTBOX, outbox)
        store.off_commit(Wake.OUTBOX, outbox)  # twice: harmless
        async with store.write() as conn:
            await conn.execute(text("SELECT 1"))
        assert woken == {"deliveries": 3, "outbox": 2}
        try:
            async with store.write(notify=Wake.DELIVERIES) as conn:
                raise LookupError("rolled back")
        except LookupError:
            pass
        assert woken["deliveries"] == 3
    finally:
        await store.close()


async def test_recording_events_wakes_deliveries_only_when_it_queued_some(store_url: str) -> None:
    """``events.record`` wakes the delivery worker from inside the write when a route wants
    an event, and only once that write commits; a rolled-back write wakes nobody."""
    from relay.events.model import Event
    from relay.store import events as events_store
    from relay.store.engine import now_ms
    from relay.store.migrate import migrate
    from relay.store.schema import webhook_routes

    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    woken: Counter[str] = Counter()
    store.on_commit(Wake.DELIVERIES, lambda: woken.update(["deliveries"]))

    async def record(*, fail: bool = False) -> None:
        async with store.write(notify=False) as conn:
            event = Event("messageNew", "acct", {"n": 1}, now_ms())
            await events_store.record(conn, [event], default_service_url="https://x")
            if fail:
                raise LookupError("rolled back")

    try:
        await record()  # no route wants it: nothing queued
        assert woken == {}
        ms = now_ms()
        async with store.write(notify=False) as conn:
            await conn.execute(
                webhook_routes.insert().values(
                    id="r1",
                    url="https://hooks.example.com/",
                    events=["*"],
                    accounts=None,
                    headers={},
                    enabled=1,
                    ordering="none",
                    secret=b"x",
                    created_ms=ms,
                    updated_ms=ms,
                )
            )
        with contextlib.suppress(LookupError):
            await record(fail=True)
        assert woken == {}
        await record()
        assert woken == {"deliveries": 1}
    finally:
        await store.close()


async def test_a_write_cancelled_mid_statement_fails_with_its_cancellation(
    store_url: str,
) -> None:
    """Cancelled while its statement runs, a write ends with CancelledError (the connection
    is invalidated; its wake requests are not looked up on it) and the next write works."""
    if not store_url.startswith("postgresql"):
        pytest.skip("needs a statement that can be made to run long: pg_sleep")
    store = Store.open(StoreSettings(url=store_url))
    woken: Counter[str] = Counter()
    store.on_commit(Wake.DELIVERIES, lambda: woken.update(["deliveries"]))

    async def slow() -> None:
        async with store.write(notify=False) as conn:
            wakes.wake_on_commit(conn, Wake.DELIVERIES)
            await conn.execute(text("SELECT pg_sleep(5)"))

    try:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with store.write(notify=False) as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
        assert woken == {}
    finally:
        await store.close()
