"""The PostgreSQL pool: ``store.pool_size`` connections at most, pinged at checkout only after
sitting idle (relay.store.idle_ping).

The ping tests end the store's one pooled connection from the server's side, as a server
restart or an idle-connection killer would, and look at what the next transaction meets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from relay.config import StoreSettings
from relay.errors import StoreError
from relay.store import idle_ping
from relay.store.engine import Store
from tests.conftest import ENGINES

pytestmark = pytest.mark.skipif("postgresql" not in ENGINES, reason="PostgreSQL only")

WAIT = 10.0


@pytest.fixture
async def store(pg_database: str) -> AsyncIterator[Store]:
    opened = Store.open(StoreSettings(url=pg_database, pool_size=1))
    try:
        yield opened
    finally:
        await opened.close()


async def backend_pid(store: Store) -> int:
    """The server process behind the connection a read gets."""
    async with store.read() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(url: str, pid: int) -> None:
    """End backend ``pid`` from the server's side and wait until it is gone."""
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        async with asyncio.timeout(WAIT):
            # The server is another process: polling it is the only way to see the end.
            gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
            while not await conn.fetchval(gone, pid):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_transactions_beyond_the_pool_size_wait_for_a_pooled_connection(
    pg_database: str,
) -> None:
    """Eight writes at once on a pool of two: two connections serve them all, none is opened
    beyond the pool (and closed again) for the others."""
    store = Store.open(StoreSettings(url=pg_database, pool_size=2))
    pids: set[int] = set()
    most = 0

    async def write() -> None:
        nonlocal most
        async with store.write() as conn:
            most = max(most, store.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]
            pids.add(int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()))
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(write() for _ in range(8)))
    finally:
        await store.close()
    assert most == 2
    assert len(pids) == 2


async def test_a_connection_idle_past_the_window_is_pinged_and_replaced(
    store: Store, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idle_ping, "IDLE_S", 0.05)
    first = await backend_pid(store)
    await terminate(pg_database, first)
    await asyncio.sleep(0.1)
    assert await backend_pid(store) != first


async def test_a_connection_used_within_the_window_is_used_without_a_ping(
    store: Store, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping: the transaction meets the dead connection and fails (nothing of it was
    done), and the pool replaces its connections for the next one."""
    monkeypatch.setattr(idle_ping, "IDLE_S", 60.0)
    first = await backend_pid(store)
    await terminate(pg_database, first)
    with pytest.raises(StoreError):
        await backend_pid(store)
    assert await backend_pid(store) != first
