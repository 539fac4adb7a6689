"""The :class:`Intake` of submits: concurrent requests share store round trips.

Submits arriving together are written in one transaction (group commit); each request
waits until its row is committed, so a 2xx still means "stored". The account lookups of
concurrent requests are one read as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from relay.store import Store
from relay.store import outbox as outbox_store
from relay.store.engine import Wake
from relay.store.outbox import Admitted
from relay.store.schema import accounts

_Waiting = tuple[Mapping[str, Any], int, "asyncio.Future[Admitted]"]


class Intake:
    """Batches the store work of submits for one store."""

    def __init__(self, store: Callable[[], Store]) -> None:
        """``store()`` gives the store (the application's, opened at start-up)."""
        self._store = store
        self._rows: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self._wanted: dict[str, asyncio.Future[RowMapping | None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def account(self, account: str) -> RowMapping | None:
        """The account's row, read together with the other requests' accounts."""
        future = self._wanted.get(account)
        if future is None:
            future = self._wanted[account] = asyncio.get_running_loop().create_future()
            if self._reader is None:
                self._reader = asyncio.create_task(self._read())
        # Shielded: one request going away must not cancel the others' lookup.
        return await asyncio.shield(future)

    async def store_row(self, row: Mapping[str, Any], *, keys_since_ms: int) -> Admitted:
        """Insert ``row`` (see :func:`relay.store.outbox.insert_many`); return once committed."""
        future: asyncio.Future[Admitted] = asyncio.get_running_loop().create_future()
        self._rows.append((row, keys_since_ms, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await asyncio.shield(future)

    async def _read(self) -> None:
        try:
            while self._wanted:
                await asyncio.sleep(0)  # let the requests of this loop turn join
                batch, self._wanted = self._wanted, {}
                try:
                    async with self._store().read() as conn:
                        query = select(accounts).where(accounts.c.id.in_(list(batch)))
                        rows = {str(r["id"]): r for r in (await conn.execute(query)).mappings()}
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for account, future in batch.items():
                    if not future.done():
                        future.set_result(rows.get(account))
        finally:
            self._reader = None

    async def _write(self) -> None:
        try:
            while self._rows:
                batch, self._rows = self._rows, []
                # Keys older than the newest request's window are forgotten; one window for
                # the batch (the requests are milliseconds apart).
                since = max(k for _, k, _ in batch)
                try:
                    async with self._store().write(notify=Wake.OUTBOX) as conn:
                        admitted = await outbox_store.insert_many(
                            conn, [row for row, _, _ in batch], keys_since_ms=since
                        )
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), answer in zip(batch, admitted, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._writer = None
