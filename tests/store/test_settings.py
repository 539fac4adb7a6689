"""``relay.store.settings``: a value set through the API while a node makes the same key's
value on first use (the service secret at start-up) — neither write fails."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from relay.store import Store
from relay.store import settings as settings_store


async def _waiting_on_a_lock(store: Store) -> None:
    """Until another session of this database waits for a row lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(10):
        while True:
            async with store.read() as conn:
                if await conn.scalar(query):
                    return
            await asyncio.sleep(0.02)


async def test_put_while_another_transaction_inserts_the_key(store: Store) -> None:
    """PostgreSQL: ``put`` meets a first-use insert of the same key not yet committed. It
    waits for it and then overwrites it, where an update-then-insert would find no row,
    insert, and fail on the key."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one write at a time")
    async with store.engine.connect() as first:
        async with first.begin():
            await settings_store.put_new(first, "serviceSecret", {"made": "on first use"})
            second = asyncio.create_task(_put(store, {"set": "through the API"}))
            await _waiting_on_a_lock(store)
        await second
    async with store.read() as conn:
        assert await settings_store.get(conn, "serviceSecret") == {"set": "through the API"}


async def _put(store: Store, value: dict[str, str]) -> None:
    async with store.write() as conn:
        await settings_store.put(conn, "serviceSecret", value)


async def test_put_inserts_then_overwrites(store: Store) -> None:
    await _put(store, {"n": "1"})
    await _put(store, {"n": "2"})
    async with store.read() as conn:
        assert await settings_store.get(conn, "serviceSecret") == {"n": "2"}
