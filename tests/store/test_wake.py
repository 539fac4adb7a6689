"""Committed writes wake the workers of the topic they name, and only those."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import text

from relay.config import StoreSettings
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
