"""Rows many callers append at the same moment, written together.

The group commit (:mod:`relay.store.group_commit`) puts writers that wait at the same moment
in one transaction, but each is still a writer of its own: a savepoint and its statements,
one after the other, each a turn of the event loop while SQLite's one writer waits. A row
that many requests append (the audit log's, one per write request) needs none of that:
:class:`Appends` gathers the rows that come while a batch is being written and writes them
as one writer with one statement (``executemany``). Each caller is answered only once the
batch holding its row is committed, or with the error that stopped it, as a write of its
own would be: a batch that fails for one of its rows (not for the store being unavailable)
is written again row by row, so a row that cannot be written fails its own caller only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import StoreUnavailable
from relay.store.engine import Store

__all__ = ["Appends"]

Row = TypeVar("Row")


class Appends(Generic[Row]):
    """Appends of ``Row`` to the store through ``write(conn, rows)``, batched (see the
    module docstring). One batch is written at a time; the rows that come meanwhile form the
    next."""

    def __init__(
        self, store: Store, write: Callable[[AsyncConnection, Sequence[Row]], Awaitable[None]]
    ) -> None:
        self._store = store
        self._write = write
        self._waiting: list[tuple[Row, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def append(self, row: Row) -> None:
        """Write ``row``; return once it is committed. A caller that is cancelled while it
        waits does not take its row (or the batch) back."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((row, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain(), name="store.appends")
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            done.add_done_callback(_unheard)
            raise

    async def close(self) -> None:
        """Wait until every row appended so far is written."""
        if self._writing is not None:
            await asyncio.shield(self._writing)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._commit([row for row, _ in batch])
                except Exception as exc:
                    if len(batch) == 1 or isinstance(exc, StoreUnavailable):
                        # The store, not a row: the next rows would fail the same way.
                        for _, done in batch:
                            _answer(done, exc)
                        continue
                    for row, done in batch:
                        try:
                            await self._commit([row])
                        except Exception as own:
                            _answer(done, own)
                        else:
                            _answer(done, None)
                else:
                    for _, done in batch:
                        _answer(done, None)
        finally:
            self._writing = None

    async def _commit(self, rows: Sequence[Row]) -> None:
        async with self._store.write(notify=False) as conn:
            await self._write(conn, rows)


def _answer(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _unheard(done: asyncio.Future[None]) -> None:
    """The caller stopped waiting: its row's outcome is nobody's to retrieve."""
    if not done.cancelled():
        done.exception()
