"""Batched appends: rows appended at the same moment share one write; each caller is
answered once its row is committed, and only with its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import StoreUnavailable
from relay.store import token_log
from relay.store.batched import Appends
from relay.store.engine import Store
from relay.store.schema import token_log as token_log_table


def _entry(token_id: str) -> token_log.Entry:
    return token_log.Entry(token_id, 1, "POST", "/v1/x", None, 200, None)


async def _stored(store: Store) -> list[str]:
    async with store.read() as conn:
        rows = await conn.execute(select(token_log_table.c.token_id).order_by("seq"))
        return [r.token_id for r in rows]


class _Writes:
    """token_log.append, counting its calls; refuses rows whose token id is ``bad``."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, conn: AsyncConnection, rows: Sequence[token_log.Entry]) -> None:
        self.calls.append(len(rows))
        if any(r.token_id == "bad" for r in rows):
            raise ValueError("bad row")
        await token_log.append(conn, rows)


async def test_rows_appended_together_share_one_write(store: Store) -> None:
    writes = _Writes()
    appends = Appends(store, writes)
    await asyncio.gather(*(appends.append(_entry(f"t{i}")) for i in range(20)))
    assert writes.calls == [20]
    assert sorted(await _stored(store)) == sorted(f"t{i}" for i in range(20))
    # Rows that come while a batch is written form the next one.
    first = asyncio.create_task(appends.append(_entry("a")))
    await asyncio.sleep(0)  # the first batch is being written
    await asyncio.gather(first, appends.append(_entry("b")), appends.append(_entry("c")))
    assert writes.calls == [20, 1, 2]


async def test_a_row_that_cannot_be_written_fails_its_own_caller_only(store: Store) -> None:
    writes = _Writes()
    appends = Appends(store, writes)
    results = await asyncio.gather(
        *(appends.append(_entry(t)) for t in ("a", "bad", "b")), return_exceptions=True
    )
    assert results[0] is None
    assert isinstance(results[1], ValueError)
    assert results[2] is None
    assert writes.calls == [3, 1, 1, 1]  # the batch, then row by row
    assert sorted(await _stored(store)) == ["a", "b"]


async def test_an_unavailable_store_fails_the_batch_without_retries(store: Store) -> None:
    calls: list[int] = []

    async def unavailable(_conn: AsyncConnection, rows: Sequence[token_log.Entry]) -> None:
        calls.append(len(rows))
        raise StoreUnavailable("the database is restarting")

    appends = Appends(store, unavailable)
    results = await asyncio.gather(
        *(appends.append(_entry(t)) for t in "abc"), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert calls == [3]


async def test_a_caller_that_stops_waiting_leaves_its_row_written(store: Store) -> None:
    appends = Appends(store, token_log.append)
    waiting = asyncio.create_task(appends.append(_entry("gone")))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await appends.close()
    assert await _stored(store) == ["gone"]
