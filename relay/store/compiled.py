"""Statements of the hot paths, compiled once per dialect and run as the driver's own SQL.

Executing a Core statement builds its cache key, looks the compiled form up and runs every
bound value through the column types' processors, row by row; on the delivery queue's
batches (claim 512 rows, record 128 outcomes, store 500 events) that cost several times
what the database spends on them (measured per row on SQLite: recording outcomes 52 us
through Core, 21 us as driver SQL, 6.5 us in bare ``sqlite3``). A :class:`Statement` is
written with Core against the schema like every other query, compiled once per dialect, and
run as driver SQL: on SQLite straight on aiosqlite's connection once the transaction has
begun (on the event loop's thread, see :func:`_on_sqlite`), otherwise with
``exec_driver_sql``. The transaction, the connection and the error translation stay
SQLAlchemy's; only the per-call statement work goes. Values are passed as the driver takes
them, so these statements bind plain ``int``/``str``/``None`` (and lists, see :func:`any_of`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import ARRAY, ColumnElement, any_, bindparam, func, literal_column, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import (
    ClauseElement,
    FromClause,
    Select,
    Subquery,
    TableValuedAlias,
)
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import await_only


def any_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``: one statement for any length
    (an ``IN (?, ?, ...)`` list would be a new statement, and a new cache entry in the
    database, for every length)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    values: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(name))
    )
    return column.in_(values.scalar_subquery())


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    order: tuple[str, ...]  # bound names, in the order of the driver's positional parameters
    defaults: Mapping[str, Any]  # values Core bound itself (literals in the statement)
    # many(): from the caller's tuple (in ``columns`` order) to the driver's; None: the same.
    reorder: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None


class Statement:
    """A statement built by ``build(dialect_name)``, compiled on first use per dialect.

    ``lists`` names the parameters bound through :func:`any_of`; ``columns`` the order of
    the values in the tuples :meth:`many` takes (every name the statement binds, apart from
    the values Core bound itself). ``inline=False`` keeps a statement that reads much (pages
    of stored events) in aiosqlite's thread on SQLite (see :func:`_on_sqlite`).
    """

    def __init__(
        self,
        build: Callable[[str], ClauseElement],
        *,
        lists: Sequence[str] = (),
        columns: Sequence[str] = (),
        inline: bool = True,
    ) -> None:
        self._build = build
        self._lists = frozenset(lists)
        self._columns = tuple(columns)
        self._inline = inline
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, conn: AsyncConnection) -> _Compiled:
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            built = cast(SQLCompiler, self._build(dialect.name).compile(dialect=dialect))
            order = tuple(built.positiontup or ())
            defaults = {name: bind.value for name, bind in built.binds.items() if not bind.required}
            compiled = _Compiled(
                sql=str(built),
                order=order,
                defaults=defaults,
                reorder=self._reorder(order, defaults),
            )
            self._compiled[dialect.name] = compiled
        return compiled

    def _reorder(
        self, order: tuple[str, ...], defaults: Mapping[str, Any]
    ) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
        if not self._columns or order == self._columns:
            return None
        missing = [n for n in order if n not in self._columns and n not in defaults]
        if missing or not set(self._columns) <= set(order):
            raise ValueError(f"statement binds {order}, not the columns {self._columns}")
        if set(order) <= set(self._columns):
            getter = itemgetter(*(self._columns.index(n) for n in order))
            if len(order) == 1:
                return lambda row: (getter(row),)
            return getter
        # Values Core bound itself (literals in the statement) go in between.
        plan = [
            (True, self._columns.index(n)) if n in self._columns else (False, defaults[n])
            for n in order
        ]
        return lambda row: tuple(row[v] if from_row else v for from_row, v in plan)

    def _args(
        self, compiled: _Compiled, dialect: str, params: Mapping[str, Any]
    ) -> tuple[Any, ...]:
        args = []
        for name in compiled.order:
            value = params[name] if name in params else compiled.defaults[name]
            if name in self._lists and dialect != "postgresql":
                value = json.dumps(list(value))
            args.append(value)
        return tuple(args)

    async def rows(self, conn: AsyncConnection, **params: Any) -> Sequence[Sequence[Any]]:
        """Run once; the rows it returns."""
        compiled = self._for(conn)
        args = self._args(compiled, conn.dialect.name, params)
        driver = _sqlite_driver(conn)
        if driver is not None:
            return list(
                await _on_sqlite(driver, compiled.sql, args, want="rows", inline=self._inline)
            )
        return (await conn.exec_driver_sql(compiled.sql, args)).all()

    async def run(self, conn: AsyncConnection, **params: Any) -> int:
        """Run once; the number of rows it changed."""
        compiled = self._for(conn)
        args = self._args(compiled, conn.dialect.name, params)
        driver = _sqlite_driver(conn)
        if driver is not None:
            return int(
                await _on_sqlite(driver, compiled.sql, args, want="rowcount", inline=self._inline)
            )
        return int((await conn.exec_driver_sql(compiled.sql, args)).rowcount or 0)

    async def many(self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run once per tuple of ``rows``, each holding the values of ``columns`` in that
        order (the driver's ``executemany``)."""
        if not rows:
            return
        compiled = self._for(conn)
        if compiled.reorder is not None:
            rows = [compiled.reorder(row) for row in rows]
        driver = _sqlite_driver(conn)
        if driver is not None:
            await _on_sqlite(driver, compiled.sql, rows, want="many", inline=self._inline)
        else:
            await conn.exec_driver_sql(compiled.sql, list(rows))


def _sqlite_driver(conn: AsyncConnection) -> Any | None:
    """aiosqlite's connection under ``conn`` once its transaction has begun, else None. A
    write transaction begins at once (``BEGIN IMMEDIATE``); a read begins at its first
    statement, which then goes through SQLAlchemy so that it does.

    Read from the synchronous connection, not with ``get_raw_connection()``, which runs in
    a greenlet of its own (a spawn and two switches per statement): while a transaction
    holds the connection it is there without any I/O. A closed or invalidated connection
    gives None, and the statement goes through SQLAlchemy, which raises what it should."""
    if conn.dialect.name != "sqlite":
        return None
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return None
    driver = sync.connection.driver_connection
    return driver if driver is not None and driver.in_transaction else None


# More rows than this for one executemany go to aiosqlite's thread (see _on_sqlite).
_INLINE_ROWS = 1000


async def _on_sqlite(driver: Any, sql: str, args: Any, *, want: str, inline: bool = True) -> Any:
    """Run one statement on the driver's ``sqlite3`` connection, on this thread.

    A hand-over to aiosqlite's thread costs about 80 us here (the thread wakes, takes the
    GIL, answers through a wake-up of the event loop); the statements compiled here take a
    few. They are the hot paths' statements, each bounded (a claim of at most a batch, an
    event batch, one row): they run on the event loop's thread, on the connection aiosqlite
    holds (opened with ``check_same_thread=False``; ``sqlite3`` is in serialized mode). A
    transaction's statements are awaited one after the other, so aiosqlite's thread has
    nothing of this connection's in hand while one runs here; and inside a begun
    transaction a statement never waits for a lock (writes begin ``IMMEDIATE``, reads
    never wait in WAL mode). ``BEGIN`` and ``COMMIT``, which may wait for the write lock or
    write a checkpoint, stay in aiosqlite's thread, as do an ``executemany`` of more than
    ``_INLINE_ROWS`` rows and the statements built with ``inline=False`` (reads of many
    rows and bytes: there SQLite's own work, which runs without the GIL, is worth the other
    core; run here, the stream's pages slowed deliveries by a third). The transaction is
    SQLAlchemy's; errors come out as SQLAlchemy's, like every other statement's. ``want``:
    ``rows``, ``rowcount`` or ``many`` (``args`` is a list of tuples, the driver's
    ``executemany``).
    """
    try:
        if not inline or (want == "many" and len(args) > _INLINE_ROWS):
            # aiosqlite's call that runs a function in its thread (also the one-hand-over
            # cursor's, relay.store.sqlite_cursor).
            return await driver._execute(_statement, driver._conn, sql, args, want)
        return _statement(driver._conn, sql, args, want)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, args, exc, sqlite3.Error) from exc


def _statement(raw: sqlite3.Connection, sql: str, args: Any, want: str) -> Any:
    """:func:`_on_sqlite`'s statement on ``raw``, on whichever thread calls it."""
    if want == "rows":
        return raw.execute(sql, args).fetchall()
    if want == "many":
        raw.executemany(sql, args)
        return None
    return raw.execute(sql, args).rowcount


def begin_sqlite(driver: Any, sql: str) -> None:
    """Run ``sql`` (``BEGIN``, ``BEGIN IMMEDIATE``) on aiosqlite's connection from
    SQLAlchemy's synchronous ``begin`` event: one hand-over to its thread, without
    SQLAlchemy's statement execution around it. Every transaction begins here."""
    try:
        await_only(driver.execute(sql))
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc


async def run_sql(conn: AsyncConnection, sql: str) -> None:
    """Run ``sql``, which binds nothing and returns no rows (``SAVEPOINT``, ``ROLLBACK TO``),
    in ``conn``'s transaction: on SQLite on this thread (:func:`_on_sqlite`)."""
    driver = _sqlite_driver(conn)
    if driver is not None:
        await _on_sqlite(driver, sql, (), want="rowcount")
        return
    await conn.exec_driver_sql(sql)


def _unnest(columns: Mapping[str, TypeEngine[Any]]) -> TableValuedAlias:
    """``unnest(:a, :b, ...) AS v(a, b, ...)``: one array parameter per column, read as rows."""
    arrays = (bindparam(name, type_=ARRAY(type_)) for name, type_ in columns.items())
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="v")


def _arrays(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """``rows`` as one list per column, bound by name (the arrays :func:`_unnest` reads)."""
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _json_rows(names: Sequence[str]) -> Subquery:
    """``(SELECT json_extract(value, '$[0]') AS a, ... FROM json_each(:rows)) AS v``: one
    JSON array of rows (each an array of the values of ``names``), read as rows (SQLite)."""
    values: list[ColumnElement[Any]] = [
        literal_column(f"json_extract(value, '$[{i}]')").label(name) for i, name in enumerate(names)
    ]
    return select(*values).select_from(func.json_each(bindparam("rows"))).subquery("v")


class ManyRows:
    """One statement for many rows of values.

    On SQLite ``one`` (binding each of ``columns`` by name) runs as the driver's
    ``executemany`` (:func:`_on_sqlite`). On PostgreSQL ``all`` gets the rows as a
    table, ``unnest()`` of one array per column, and runs once: an execution per row (what
    asyncpg's ``executemany`` does) cost the server about half as much again as the rows' own
    work (recording outcomes: 34 -> 22 µs per row).
    """

    def __init__(
        self,
        columns: Mapping[str, TypeEngine[Any]],
        *,
        one: Callable[[], ClauseElement],
        all: Callable[[TableValuedAlias], ClauseElement],
    ) -> None:
        self._names = tuple(columns)
        self._one = Statement(lambda _: one(), columns=self._names)
        self._all = Statement(lambda _: all(_unnest(columns)))

    async def run(self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run for ``rows``, each holding the values of ``columns`` in that order."""
        if not rows:
            return
        if conn.dialect.name != "postgresql":
            await self._one.many(conn, rows)
            return
        await self._all.run(conn, **_arrays(self._names, rows))


class RowsTable:
    """One statement over many rows of values read as a table on both databases, for what
    needs them all in one statement (an ``INSERT ... RETURNING`` of the rows it inserted).

    ``build`` gets the rows as a table named ``v`` with ``columns`` (and the dialect's
    name): on PostgreSQL ``unnest()`` of one array per column (as :class:`ManyRows`), on
    SQLite ``json_each()`` of one JSON array of rows. Either way one statement, compiled
    once, for any number of rows; the values must be what JSON carries exactly on SQLite
    (text, integers, None).
    """

    def __init__(
        self,
        columns: Mapping[str, TypeEngine[Any]],
        build: Callable[[FromClause, str], ClauseElement],
    ) -> None:
        self._names = tuple(columns)
        self._statement = Statement(
            lambda dialect: build(
                _unnest(columns) if dialect == "postgresql" else _json_rows(self._names),
                dialect,
            )
        )

    async def rows(
        self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]
    ) -> Sequence[Sequence[Any]]:
        """Run for ``rows`` (each holding the values of ``columns`` in that order); the
        rows the statement returns."""
        if not rows:
            return []
        if conn.dialect.name == "postgresql":
            return await self._statement.rows(conn, **_arrays(self._names, rows))
        return await self._statement.rows(conn, rows=json.dumps(rows))
