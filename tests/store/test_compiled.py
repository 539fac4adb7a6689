"""Compiled statements: the same results as Core, in reads and writes, on both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import bindparam, literal_column, select, true, update

from relay.config import StoreSettings
from relay.errors import StoreError
from relay.store import dialect
from relay.store.compiled import RowsTable, Statement, any_of
from relay.store.engine import Store
from relay.store.migrate import migrate
from relay.store.schema import settings

_BY_KEYS = Statement(
    lambda dialect: (
        select(settings.c.key, settings.c.updated_ms)
        .where(any_of(settings.c.key, "keys", dialect))
        .order_by(settings.c.key)
    ),
    lists=("keys",),
)
# Core binds "b" itself (a literal of the statement) between the caller's values.
_TOUCH = Statement(
    lambda _: (
        update(settings)
        .where(settings.c.key == bindparam("key"), settings.c.key != "b")
        .values(updated_ms=bindparam("ms"))
    ),
    columns=("ms", "key"),
)
# Adds settings that are not there yet (value 1); returns the ones it added.
_ADD = RowsTable(
    {"key": settings.c.key.type, "ms": settings.c.updated_ms.type},
    lambda v, name: (
        dialect.insert_for(name, settings)
        .from_select(
            ["key", "value", "updated_ms"],
            select(v.c.key, literal_column("'1'"), v.c.ms).where(true()),
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(settings.c.key, settings.c.updated_ms)
    ),
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store with settings ``a``, ``b`` and ``c``."""
    opened = Store.open(StoreSettings(url=store_url))
    await migrate(opened)
    async with opened.write() as conn:
        for n, key in enumerate("abc"):
            await conn.execute(settings.insert().values(key=key, value=n, updated_ms=n))
    try:
        yield opened
    finally:
        await opened.close()


async def test_first_statement_of_a_read(store: Store) -> None:
    """A compiled statement may be the first of a read transaction (which begins with it)."""
    async with store.read() as conn:
        rows = await _BY_KEYS.rows(conn, keys=["c", "a", "zz"])
    assert [tuple(r) for r in rows] == [("a", 0), ("c", 2)]


async def test_lists_of_any_length_and_values_in_between(store: Store) -> None:
    """One statement text for lists of any length; executemany rows fill in what Core bound."""
    async with store.write() as conn:
        await _TOUCH.many(conn, [(10, "a"), (11, "b"), (12, "c")])
        assert await _TOUCH.run(conn, ms=20, key="a") == 1
        assert await _TOUCH.run(conn, ms=20, key="b") == 0
        one = await _BY_KEYS.rows(conn, keys=["b"])
        three = await _BY_KEYS.rows(conn, keys=["a", "b", "c"])
    assert [tuple(r) for r in one] == [("b", 1)]
    assert [tuple(r) for r in three] == [("a", 20), ("b", 1), ("c", 12)]


async def test_a_failing_statement_fails_only_its_write(store: Store) -> None:
    """A driver error comes out as SQLAlchemy's (so the write fails with StoreError, as for
    any other statement), and nothing of that write is kept."""
    broken = Statement(lambda _: settings.insert().values(key=bindparam("key")))

    async def touch_then_break() -> None:
        async with store.write() as conn:
            await _TOUCH.run(conn, ms=99, key="a")
            await broken.run(conn, key="d")  # value and updated_ms may not be NULL

    with pytest.raises(StoreError):
        await touch_then_break()
    async with store.read() as conn:
        rows = await _BY_KEYS.rows(conn, keys=["a", "d"])
    assert [tuple(r) for r in rows] == [("a", 0)]


async def test_rows_as_a_table_insert_and_return_what_was_new(store: Store) -> None:
    """Rows of any number, read as a table: text as it is (quotes, non-ASCII), integers at
    both ends of 64 bits; the statement returns only the rows it inserted."""
    rows = [("a", 5), ('it\'s "q" \u00fc', -(2**63)), ("big", 2**63 - 1)]
    async with store.write() as conn:
        added = await _ADD.rows(conn, rows)
        again = await _ADD.rows(conn, [("big", 1), ("new", 0)])
        assert await _ADD.rows(conn, []) == []
    assert sorted(tuple(r) for r in added) == sorted(rows[1:])
    assert [tuple(r) for r in again] == [("new", 0)]
    async with store.read() as conn:
        stored = await _BY_KEYS.rows(conn, keys=[key for key, _ in rows])
    assert sorted(tuple(r) for r in stored) == sorted([("a", 0), *rows[1:]])
