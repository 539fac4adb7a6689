"""Wake-ups between nodes: PostgreSQL ``LISTEN``/``NOTIFY``.

A node that changes something another node acts on says so here: an account added, changed
or asked to reconnect through any node's API (``account``), a Graph notification stored by
whichever node the load balancer picked (``graph``), the nodes or the leases changed
(``cluster``: a node joined, is leaving, or released accounts for others to take). Every
other node hears it within milliseconds and acts at once instead of at its next scan.

Wake-ups are hints, not the record: what they point at is already in the store, and every
node's periodic scan (``imap.scan_interval``) finds it anyway, so a message lost while the
listening connection was down costs latency, not data. After the connection comes back,
the ``on_reconnect`` callbacks run (the supervisor scans everything). On SQLite (one node)
there is nobody to tell: :meth:`Bus.send` does nothing.

One asyncpg connection of its own per node, outside the SQLAlchemy pool, both listens and
sends (sends are batched: one ``pg_notify`` round trip for whatever queued meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine.url import make_url

__all__ = ["CHANNEL", "Bus", "listen_dsn"]

log = structlog.get_logger(__name__)

CHANNEL = "relay_wake"
# Seconds between pings of an idle connection (a dead one shows there), and the most a
# statement may take.
_PING = 5.0
_TIMEOUT = 10.0
_RETRY_MIN = 0.5
_RETRY_MAX = 15.0
# pg_notify payloads are limited to 8000 bytes.
_MAX_PAYLOAD = 7900


# Query options of a store URL that only SQLAlchemy's asyncpg dialect understands (asyncpg's
# DSN parser would send them to the server as settings, which refuses them).
_DIALECT_ONLY = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback"}
)


def listen_dsn(store_url: str) -> str | None:
    """The asyncpg DSN of a PostgreSQL store URL; None for SQLite.

    The dialect's ``ssl=<mode>`` becomes libpq's ``sslmode=<mode>`` (what asyncpg's DSN
    takes); options only the dialect knows are dropped.
    """
    url = make_url(store_url)
    if url.get_backend_name() not in ("postgresql", "postgres"):
        return None
    query = {k: v for k, v in url.query.items() if k not in _DIALECT_ONLY}
    if "ssl" in query:
        mode = query.pop("ssl")
        query.setdefault("sslmode", mode)
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


class Bus:
    """This node's end of the wake-up channel (see the module docstring)."""

    def __init__(self, dsn: str | None, node: str) -> None:
        """``dsn``: PostgreSQL's (:func:`listen_dsn`), None on SQLite; ``node``: this
        node's id (its own messages are not handed back to it)."""
        self._dsn = dsn
        self.node = node
        self._handlers: dict[str, list[Callable[[str], object]]] = {}
        self._reconnected: list[Callable[[], None]] = []
        self._queue: list[str] = []
        self._wake = asyncio.Event()
        # Set when the queue was sent and nothing new queued since.
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set while the listening connection is up (tests wait for it).
        self.connected = asyncio.Event()

    def subscribe(self, topic: str, handler: Callable[[str], object]) -> None:
        """Call ``handler(value)`` for each ``topic`` message another node sends (what it
        returns is ignored)."""
        self._handlers.setdefault(topic, []).append(handler)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the connection is back after a loss (messages may have
        been missed meanwhile)."""
        self._reconnected.append(callback)

    def send(self, topic: str, value: str = "") -> None:
        """Tell the other nodes (never blocks; sent with whatever else queues meanwhile)."""
        if self._dsn is None:
            return
        payload = f"{self.node}\t{topic}\t{value}"
        if len(payload.encode()) > _MAX_PAYLOAD:
            log.warning("wake-up too long to send", topic=topic)
            return
        self._queue.append(payload)
        self._drained.clear()
        self._wake.set()

    async def start(self) -> None:
        """Connect and listen (on PostgreSQL); retries in the background when it cannot."""
        if self._dsn is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="wake-up bus")

    async def stop(self) -> None:
        """Send what is queued (briefly), then disconnect."""
        if self._task is None:
            return
        # Queued, or taken for a send that is under way: give it a moment to go out.
        if not self._drained.is_set() and self.connected.is_set():
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._drained.wait()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._dsn is not None
        delay = _RETRY_MIN
        first = True
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=_TIMEOUT)
                # A connection the server ended wakes the loop at once (not at the next ping).
                conn.add_termination_listener(lambda _conn: self._wake.set())
                await conn.add_listener(CHANNEL, self._received)
                self.connected.set()
                if not first:
                    log.info("wake-up channel back")
                    for callback in list(self._reconnected):
                        callback()
                first = False
                delay = _RETRY_MIN
                await self._serve(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Warn when the channel is lost; the retries of one outage are debug.
                level = logging.WARNING if delay == _RETRY_MIN else logging.DEBUG
                log.log(level, "wake-up channel lost; reconnecting", error=str(exc), retry_in=delay)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=1.0))
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _serve(self, conn: Any) -> None:
        """Send what queues; ping when idle. Returns only by raising (connection lost)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PING):
                    await self._wake.wait()
            self._wake.clear()
            if conn.is_closed():
                raise ConnectionError("the server ended the connection")
            batch, self._queue = self._queue, []
            try:
                if batch:
                    await conn.execute(
                        "SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m",
                        CHANNEL,
                        batch,
                        timeout=_TIMEOUT,
                    )
                else:
                    await conn.execute("SELECT 1", timeout=_TIMEOUT)
            except BaseException:
                self._queue = batch + self._queue  # sent as soon as a connection is back
                if self._queue:
                    self._wake.set()
                raise
            if not self._queue:
                self._drained.set()

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, rest = payload.partition("\t")
        topic, _, value = rest.partition("\t")
        if origin == self.node:
            return
        for handler in list(self._handlers.get(topic, ())):
            try:
                handler(value)
            except Exception:
                log.exception("wake-up handler failed", topic=topic)
