"""SQLite statements through SQLAlchemy: one hand-over to aiosqlite's thread each, with the
results the stock cursor gives; compiled statements on the event loop's thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, text
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.exc import IntegrityError

from relay.config import StoreSettings
from relay.store import compiled, sqlite_cursor
from relay.store.compiled import Statement
from relay.store.engine import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store.open(StoreSettings(url=f"sqlite:///{tmp_path / 'relay.db'}"))
    async with opened.write() as conn:
        await conn.execute(
            text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER)")
        )
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def hand_overs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions run in aiosqlite's thread, in order."""
    seen: list[str] = []
    original: Callable[..., Awaitable[Any]] = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


async def test_one_hand_over_per_statement(store: Store, hand_overs: list[str]) -> None:
    """BEGIN, three statements and COMMIT: five hand-overs (the stock cursor takes four per
    statement: 14)."""
    async with store.write() as conn:
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        await conn.execute(text("UPDATE t SET n = n + 1"))
        rows = (await conn.execute(text("SELECT name, n FROM t"))).all()
    assert [tuple(r) for r in rows] == [("a", 2)]
    assert len(hand_overs) == 5, hand_overs


async def test_results_as_the_stock_cursor_gives_them(store: Store) -> None:
    async with store.write() as conn:
        inserted = await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        assert inserted.rowcount == 1
        assert inserted.lastrowid == 1
        returned = await conn.execute(
            text("INSERT INTO t (name, n) VALUES ('b', 2) RETURNING id, name")
        )
        assert list(returned.keys()) == ["id", "name"]
        assert [tuple(r) for r in returned] == [(2, "b")]
        many = await conn.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"),
            [{"name": f"m{i}", "n": i} for i in range(5)],
        )
        assert many.rowcount == 5
        changed = await conn.execute(text("UPDATE t SET n = 0 WHERE name LIKE 'm%'"))
        assert changed.rowcount == 5
        nothing = await conn.execute(text("UPDATE t SET n = 0 WHERE name = 'zz'"))
        assert nothing.rowcount == 0
        result = await conn.execute(text("SELECT name FROM t ORDER BY id"))
        assert result.fetchone() == ("a",)
        assert [tuple(r) for r in result.fetchmany(2)] == [("b",), ("m0",)]
        assert [r[0] for r in result.fetchall()] == ["m1", "m2", "m3", "m4"]
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 7
    async with store.read() as conn:
        streamed = await conn.stream(text("SELECT n FROM t WHERE n > 0 ORDER BY n"))
        assert [r[0] async for r in streamed] == [1, 2]


async def test_an_error_fails_its_statement_only(store: Store) -> None:
    """A constraint error comes out as SQLAlchemy's, and the transaction goes on."""
    async with store.write() as conn:
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        nested = await conn.begin_nested()
        with pytest.raises(IntegrityError):
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 2)"))
        await nested.rollback()
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('b', 3)"))
    async with store.read() as conn:
        rows = (await conn.execute(text("SELECT name, n FROM t ORDER BY id"))).all()
    assert [tuple(r) for r in rows] == [("a", 1), ("b", 3)]


async def test_stock_cursor_without_the_call_it_needs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with store.engine.connect() as conn:
        adapted = (await conn.get_raw_connection()).dbapi_connection
        assert type(adapted) is not AsyncAdapt_aiosqlite_connection  # installed
        adapted.__class__ = AsyncAdapt_aiosqlite_connection
        monkeypatch.delattr(aiosqlite.Connection, "_execute")
        assert not sqlite_cursor.install(adapted)
        assert type(adapted) is AsyncAdapt_aiosqlite_connection
        monkeypatch.undo()
        assert sqlite_cursor.install(adapted)
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


_T = Table(
    "t",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String),
    Column("n", Integer),
)
_ADD = Statement(
    lambda _: insert(_T).values(name=bindparam("name"), n=bindparam("n")), columns=("name", "n")
)
_NAMES = Statement(lambda _: select(_T.c.name).where(_T.c.n >= bindparam("n")).order_by(_T.c.id))


async def test_compiled_statements_run_on_the_loop_thread(
    store: Store, hand_overs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a begun transaction compiled statements take no hand-over (BEGIN and COMMIT
    do); an executemany above the inline limit goes to aiosqlite's thread."""
    async with store.write() as conn:
        await _ADD.many(conn, [("a", 1), ("b", 2)])
        assert [tuple(r) for r in await _NAMES.rows(conn, n=2)] == [("b",)]
    assert len(hand_overs) == 2, hand_overs
    monkeypatch.setattr(compiled, "_INLINE_ROWS", 2)
    hand_overs.clear()
    async with store.write() as conn:
        await _ADD.many(conn, [("c", 3), ("d", 4), ("e", 5)])
    assert len(hand_overs) == 3, hand_overs
    async with store.read() as conn:
        assert [r[0] for r in await _NAMES.rows(conn, n=0)] == ["a", "b", "c", "d", "e"]
