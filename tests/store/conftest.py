"""A migrated store on each engine, for the store's tests (a file may define its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.config import StoreSettings
from relay.store.engine import Store
from relay.store.migrate import migrate


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = Store.open(StoreSettings(url=store_url))
    await migrate(opened)
    try:
        yield opened
    finally:
        await opened.close()
