"""The notify* settings that message content in webhooks depends on: read once, shared."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from relay.config import StoreSettings
from relay.mailbox.notify import Enricher
from relay.store import settings as settings_store
from relay.store.engine import Store
from relay.store.migrate import migrate


class CountingStore:
    """A store whose reads are counted; the first one can be held after its queries ran."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.first_read = asyncio.Event()
        self.release_first: asyncio.Event | None = None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        self.reads += 1
        first = self.reads == 1
        async with self.store.read() as conn:
            yield conn
        if first:
            self.first_read.set()
            if self.release_first is not None:
                await self.release_first.wait()


async def _open(tmp_path: Path) -> Store:
    store = Store.open(StoreSettings(url=f"sqlite:///{tmp_path / 'relay.db'}"))
    await migrate(store)
    return store


def _enricher(store: CountingStore) -> Enricher:
    return Enricher(cast(Any, store), cast(Any, None), timeout=1.0)


async def test_callers_at_the_same_moment_share_one_read(tmp_path: Path) -> None:
    """Fifty commits asking for the settings at once cause one read, and all get its result."""
    store = await _open(tmp_path)
    try:
        async with store.write() as conn:
            await settings_store.put(conn, "notifyText", True)
        counting = CountingStore(store)
        enricher = _enricher(counting)
        found = await asyncio.gather(*(enricher.options() for _ in range(50)))
        assert counting.reads == 1
        assert all(options.text for options in found)
    finally:
        await store.close()


async def test_forget_is_not_undone_by_a_read_that_predates_it(tmp_path: Path) -> None:
    """A read under way when the settings change (and ``forget`` is called) neither serves
    the callers after the change nor overwrites what they read."""
    store = await _open(tmp_path)
    try:
        counting = CountingStore(store)
        counting.release_first = asyncio.Event()
        enricher = _enricher(counting)
        before = asyncio.create_task(enricher.options())
        await counting.first_read.wait()  # its queries ran: it saw no notifyText
        async with store.write() as conn:
            await settings_store.put(conn, "notifyText", True)
        enricher.forget()
        assert (await enricher.options()).text
        counting.release_first.set()
        assert not (await before).text
        assert (await enricher.options()).text
        assert counting.reads == 2
    finally:
        await store.close()
