"""The :class:`Store`: an async SQLAlchemy engine for SQLite or PostgreSQL.

SQLite runs in WAL mode. Writes waiting at the same moment share one transaction, each in its
own savepoint (:mod:`relay.store.group_commit`); that transaction starts with ``BEGIN
IMMEDIATE`` so that another process's writer queues on the database lock instead of failing
with ``SQLITE_BUSY`` when a read lock would have to be upgraded. Reads use plain deferred
transactions and never block writers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from relay.config import StoreSettings
from relay.errors import StoreError
from relay.store import idle_ping, sqlite_cursor, wakes
from relay.store.compiled import begin_sqlite
from relay.store.group_commit import GroupCommit
from relay.store.outage import Outage, store_error

# Seconds a new PostgreSQL connection may take.
_CONNECT_TIMEOUT = 10.0


def now_ms() -> int:
    """Current time as epoch milliseconds (the unit of every ``*_ms`` column)."""
    return int(time.time() * 1000)


def engine_url(url: str) -> str:
    """Map the user-facing URL (``sqlite:///x.db``, ``postgresql://``) to a driver URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise StoreError(f"unsupported store url {url!r}")


class Wake:
    """Topics of ``Store.write(notify=...)``: which workers a committed write concerns."""

    # The write recorded events, so deliveries are due (the webhook worker).
    DELIVERIES = "deliveries"
    # The write queued outgoing mail (the outbox worker).
    OUTBOX = "outbox"
    # The write recorded events (the event stream's sequencer, relay.store.stream).
    EVENTS = "events"


class Store:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, engine: AsyncEngine, control: AsyncEngine | None = None) -> None:
        """``control``: PostgreSQL only, a small engine of its own for :meth:`control_write`."""
        self.engine = engine
        self._control = control
        self.dialect = engine.dialect.name
        # Topic -> what to call after a committed write that names it (workers wake up).
        self._hooks: dict[str, list[Callable[[], None]]] = {}
        # SQLite has one writer at a time: writers queue here and share transactions
        # (relay.store.group_commit) instead of each waiting in SQLite's busy handler,
        # which sleeps up to 100 ms between retries.
        self._group = (
            GroupCommit(self._sqlite_transaction, self._committed_topics)
            if self.dialect == "sqlite"
            else None
        )
        self._writer: AsyncConnection | None = None
        self.outage = Outage()

    @classmethod
    def open(cls, settings: StoreSettings) -> Store:
        url = engine_url(settings.url)
        if url.startswith("sqlite"):
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # Readers kept open up to the pool size (plus the writer, which stays checked out):
            # SQLAlchemy's default of 5 left 4 for reads, and under 32 concurrent API requests
            # each read beyond them opened and closed a connection (a thread and a file).
            engine = create_async_engine(
                url,
                pool_size=settings.pool_size + 1,
                max_overflow=settings.pool_size,
                # Compiled statements run on the event loop's thread, on the connection
                # aiosqlite opened in its own (relay.store.compiled._on_sqlite).
                connect_args={"timeout": 30, "check_same_thread": False},
            )
            _configure_sqlite(engine)
        else:
            # A server that does not answer (down behind a firewall, or hung) fails a connect
            # after _CONNECT_TIMEOUT s, as StoreUnavailable, instead of asyncpg's 60 s.
            connect_args = {"timeout": _CONNECT_TIMEOUT}
            # pool_size is the most connections the node's work opens (no overflow): past it
            # a transaction waits for a pooled connection. An overflow connection was opened
            # for one transaction and closed after it (a connect, the SSL probe, the types'
            # introspection, every statement prepared again): under 32 concurrent test
            # deliveries that churn was most of the relay's time, and it halved throughput.
            engine = create_async_engine(
                url, pool_size=settings.pool_size, max_overflow=0, connect_args=connect_args
            )
            control = create_async_engine(
                url, pool_size=1, max_overflow=1, connect_args=connect_args
            )
            for pool in (engine, control):
                idle_ping.ping_when_idle(pool)
            return cls(engine, control)
        return cls(engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        body = _Body()
        with self._guard("read", body):
            async with self.engine.connect() as conn:
                with body:
                    yield conn

    def on_commit(self, topic: str, hook: Callable[[], None]) -> None:
        """Call ``hook`` after each committed write that notifies ``topic`` (see :class:`Wake`)."""
        self._hooks.setdefault(topic, []).append(hook)

    def off_commit(self, topic: str, hook: Callable[[], None]) -> None:
        """Stop calling ``hook`` for ``topic``."""
        with contextlib.suppress(ValueError):
            self._hooks.get(topic, []).remove(hook)

    @asynccontextmanager
    async def write(self, *, notify: bool | str = True) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block exits without an exception.

        After the commit, ``notify`` wakes the workers of one topic (a :class:`Wake` value:
        the write queued deliveries, or outgoing mail), every topic (True: a write whose
        effects are not known here), or none (False: a worker's own bookkeeping). Code that
        learns only inside the write what it queued asks for more with
        :func:`relay.store.wakes.wake_on_commit`.
        """
        if self._group is not None:
            with self._guard("write", _Body()):
                async with self._group.write(notify) as conn:
                    yield conn
            return
        # PostgreSQL: each write is its own transaction on a pooled connection; concurrent
        # commits are flushed to the WAL together by the server itself.
        async with self._pg_write(self.engine) as conn:
            yield conn
        self._committed_topics([notify])

    @contextlib.contextmanager
    def _guard(self, what: str, body: _Body) -> Iterator[None]:
        """Driver failures as :class:`StoreError` (:mod:`relay.store.outage` sorts them), and
        the store's outage state kept up to date.

        SQLAlchemy wraps what the database answers, but a connect that is refused or times out
        (the server down or restarting) reaches us as the driver's own ``OSError``; those count
        too, unless the transaction's block raised them itself.
        """
        try:
            yield
        except StoreError as exc:
            self.outage.failed(exc, write=what == "write")
            raise
        except (SQLAlchemyError, OSError) as exc:
            if isinstance(exc, OSError) and exc is body.raised:
                raise
            error = store_error(exc, what)
            self.outage.failed(error, write=what == "write")
            raise error from exc
        else:
            self.outage.succeeded(write=what == "write")

    @asynccontextmanager
    async def _pg_write(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        body = _Body()
        with self._guard("write", body):
            async with engine.connect() as conn, self._committing(conn):
                with body:
                    yield conn

    @asynccontextmanager
    async def _sqlite_transaction(self) -> AsyncIterator[AsyncConnection]:
        # One connection for every write, kept open: the group commit runs one transaction
        # at a time, and checking a connection out of the pool and back in (with its reset)
        # cost about as much as the transaction's own BEGIN and COMMIT.
        conn = self._writer
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    await conn.close()
            opened = await self.engine.connect()
            conn = self._writer = await opened.execution_options(sqlite_begin="IMMEDIATE")
        async with self._committing(conn):
            yield conn

    @asynccontextmanager
    async def _committing(self, conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
        """A transaction on ``conn``; once it commits, the workers the write asked for from
        inside it (:mod:`relay.store.wakes`) are woken."""
        try:
            async with conn.begin():
                yield conn
        except BaseException:
            # Forget the requests; an invalidated connection (a statement cancelled midway)
            # dropped them with its info, and touching that info would try to reconnect.
            if not conn.invalidated:
                wakes.take(conn)
            raise
        self._committed_topics(sorted(wakes.take(conn)))

    def _committed_topics(self, topics: list[bool | str]) -> None:
        """Wake the workers of the topics that committed writes named."""
        if True in topics:
            wanted = list(self._hooks)
        else:
            wanted = sorted({t for t in topics if isinstance(t, str)})
        for topic in wanted:
            for hook in list(self._hooks.get(topic, [])):
                hook()

    @asynccontextmanager
    async def control_write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction for a node's heartbeat and leases.

        On PostgreSQL it runs on a connection of its own, so that a node whose pool is busy
        with listeners (hundreds starting after a takeover) still renews its leases in time
        instead of losing them to the other nodes; on SQLite it is an ordinary write.
        """
        if self._control is None:
            async with self.write(notify=False) as conn:
                yield conn
            return
        async with self._pg_write(self._control) as conn:
            yield conn

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._group is not None:
            await self._group.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(SQLAlchemyError):
                await writer.close()
        await self.engine.dispose()
        if self._control is not None:
            await self._control.dispose()


class _Body:
    """Remembers what the block of a transaction raised, to tell it apart from the driver's."""

    raised: BaseException | None = None

    def __enter__(self) -> None:
        return None

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        self.raised = exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        sqlite_cursor.install(dbapi_connection)
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash or power
        # loss can roll back the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        begin_sqlite(conn.connection.driver_connection, f"BEGIN {mode}".strip())
