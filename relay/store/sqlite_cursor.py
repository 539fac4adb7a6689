"""SQLite statements through SQLAlchemy in one hand-over to aiosqlite's thread each.

aiosqlite runs every call on the ``sqlite3`` connection in a thread of its own; each call is
a hand-over: the thread wakes, runs it, and the answer comes back through the event loop
(a wake-up of the loop, a future's callback, a greenlet switch back into SQLAlchemy). The
adapter SQLAlchemy ships makes four of them per statement (open a cursor, execute, fetch
the rows, close the cursor); on a busy loop each waits its turn, and a write transaction
holds SQLite's one writer for all of them. :class:`OneHandOverCursor` does the four in the
thread as one call and keeps what SQLAlchemy reads afterwards (the rows, ``description``,
``rowcount``, ``lastrowid``).

Written by hand because it is the store's hot path and neither library offers it: the
adapter's other parts (connection, transactions, errors, server-side cursors) stay
SQLAlchemy's, and :func:`install` leaves the stock cursor in place if aiosqlite no longer
has the one call this relies on (``Connection._execute``, which runs a function in its
thread and answers with its result).
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import EMPTY_DICT, await_only

_Result = tuple[Any, int, int | None, list[Any]]


def _execute(conn: sqlite3.Connection, sql: str, params: Any) -> _Result:
    """In aiosqlite's thread: run one statement and take everything from its cursor."""
    cursor = conn.cursor()
    try:
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _executemany(conn: sqlite3.Connection, sql: str, params: Any) -> _Result:
    cursor = conn.cursor()
    try:
        cursor.executemany(sql, params)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


class OneHandOverCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, one hand-over per ``execute``: no aiosqlite cursor is
    kept; each statement opens, runs, drains and closes a ``sqlite3`` cursor in the thread.
    Rows are held here (as the stock cursor holds them after its fetch)."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # Not the parent's __init__: it opens an aiosqlite cursor (a hand-over) up front.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1  # sqlite3's default, what fetchmany() without a size takes

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        raise NotImplementedError("arraysize is fixed")

    async def _async_soft_close(self) -> None:
        return None  # nothing is open: the statement's cursor closed in the thread

    def close(self) -> None:
        self._rows.clear()

    def _run(self, fn: Any, sql: str, params: Any) -> None:
        driver: Any = self._connection
        try:
            result: _Result = await_only(driver._execute(fn, driver._conn, sql, params))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, self._rowcount, self._lastrowid, rows = result
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        self._run(_execute, operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        self._run(_executemany, operation, seq_of_parameters)

    def nextset(self) -> None:
        raise NotImplementedError("sqlite3 has one result set per statement")

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class _OneHandOverConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls: type[AsyncAdapt_aiosqlite_cursor] = OneHandOverCursor


def install(dbapi_connection: Any) -> bool:
    """From the engine's ``connect`` event: give this connection :class:`OneHandOverCursor`
    for its statements. False (the stock cursor stays) if aiosqlite lacks what it needs."""
    if type(dbapi_connection) is not AsyncAdapt_aiosqlite_connection:
        return False
    if not callable(getattr(aiosqlite.Connection, "_execute", None)):
        return False
    dbapi_connection.__class__ = _OneHandOverConnection
    return True
