"""Nodes starting together on an empty PostgreSQL store agree on what the first start
creates (the service secret, the configured API token) instead of failing or overwriting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.crypto import Cipher, derive_key
from relay.config import StoreSettings
from relay.store import tokens
from relay.store.engine import Store
from relay.store.migrate import migrate
from relay.store.schema import api_tokens
from relay.webhooks.routes import service_secret


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite is single-node, and its writes never overlap")
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    yield store
    await store.close()


async def overlapping(store: Store, make: Callable[[AsyncConnection], Awaitable[Any]]) -> list[Any]:
    """Run ``make`` in two write transactions, the second starting while the first (which
    has already made its row) is still open; both results."""

    async def second() -> Any:
        async with store.write() as conn:
            return await make(conn)

    async with store.write() as conn:
        first = await make(conn)
        task = asyncio.create_task(second())
        await asyncio.sleep(0.2)  # the second now waits on the first's uncommitted row
    return [first, await task]


async def test_two_nodes_make_one_service_secret(store: Store) -> None:
    """Both see the secret the first one stored."""
    cipher = Cipher(derive_key("test-secret-for-credentials"))
    first, second = await overlapping(store, lambda c: service_secret(c, cipher, create=True))
    assert first == second
    async with store.read() as conn:
        assert await service_secret(conn, cipher, create=False) == first


async def test_two_nodes_add_one_configured_token(store: Store) -> None:
    """The same configured token added by two nodes at once is one row with one id."""
    first, second = await overlapping(
        store, lambda c: tokens.add(c, "configured-token-0123456789abcdef", source="config")
    )
    assert first == second
    async with store.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(api_tokens)) == 1
