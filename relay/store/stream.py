"""The event stream: commit-ordered positions on stored events, read by cursor.

``events.seq`` is given at INSERT, but on PostgreSQL transactions commit in another order:
a reader that has seen seq 105 can later see 104 commit, so a reader resuming after a seq
would skip 104 for ever. The stream's cursor is therefore another number, ``events.pos``,
given **after** commit by :func:`assign`: one transaction at a time (it locks the one
``event_stream`` row, SQLite's writer lock does the same there) gives the committed events
that have none the next positions, in seq order. The transactions that give positions
commit one after the other, each with higher positions than every committed one, so any
snapshot sees every position up to the highest it sees: ``pos > cursor`` never skips.

Pruning (``relay.store.deliveries.prune``) deletes old events, not contiguously (an event
with a delivery still pending is kept), and raises ``event_stream.pruned_pos`` to the
highest position it deleted: a cursor below it may have lost events (:attr:`Page.expired`).

:class:`Sequencer` runs :func:`assign` on each node: woken when a local write recorded events
(``Wake.EVENTS``, :meth:`Sequencer.stored`: that round assigns at once), when another node
says it gave positions (the bus), and every ``poll_interval`` in any case (those rounds look
with a read first, and most find nothing). After each round that saw the stream move it
wakes the readers waiting on :meth:`Sequencer.changed`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from sqlalchemy import bindparam, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ClauseElement

from relay.errors import StoreError
from relay.store import dialect
from relay.store.compiled import ManyRows, Statement
from relay.store.engine import Store
from relay.store.schema import event_stream, events

__all__ = [
    "Assigned",
    "Page",
    "Sequencer",
    "SharedReads",
    "StreamEvent",
    "assign",
    "counters",
    "parse_cursor",
    "read",
    "snapshot",
]

log = structlog.get_logger(__name__)

_ROW = 1
# Events given positions per transaction.
ASSIGN_BATCH = 1000
_CURSOR = re.compile(r"[0-9]{1,18}")
_RETRY_MAX = 15.0
# The recent events a node keeps for its streams (Sequencer.recent): at most this many, and
# this many bytes of payload.
_RECENT_EVENTS = 5000
_RECENT_BYTES = 16 * 1024 * 1024
# Pages Recent keeps for streams at the same cursor, between two moves of the stream.
_RECENT_PAGES = 1024
# Full pages SharedReads keeps for streams that ask for them a moment later.
_KEPT_PAGES = 256
_KEPT_BYTES = 16 * 1024 * 1024


def parse_cursor(value: str) -> int | None:
    """A cursor as its position; None when ``value`` is not one (decimal digits)."""
    if not _CURSOR.fullmatch(value):
        return None
    return int(value)


def _counters(*, lock: bool) -> Statement:
    def build(dialect_name: str) -> ClauseElement:
        query = select(event_stream.c.last_pos, event_stream.c.pruned_pos).where(
            event_stream.c.id == literal_column(str(_ROW))
        )
        return query.with_for_update() if lock and dialect_name == "postgresql" else query

    return Statement(build)


# Compiled once (relay.store.compiled): the sequencer runs these after every write that
# stored events, in the one writer's transaction on SQLite.
_COUNTERS = _counters(lock=False)
_COUNTERS_LOCKED = _counters(lock=True)
_UNPLACED = Statement(
    lambda _: (
        select(events.c.seq)
        .where(events.c.pos.is_(None))
        .order_by(events.c.seq)
        .limit(bindparam("limit"))
    )
)
_GIVE = ManyRows(
    {"s": events.c.seq.type, "p": events.c.pos.type},
    one=lambda: update(events).where(events.c.seq == bindparam("s")).values(pos=bindparam("p")),
    all=lambda v: update(events).where(events.c.seq == v.c.s).values(pos=v.c.p),
)
_SET_LAST = Statement(
    lambda _: (
        update(event_stream)
        .where(event_stream.c.id == literal_column(str(_ROW)))
        .values(last_pos=bindparam("last"))
    )
)


async def counters(conn: AsyncConnection, *, lock: bool = False) -> tuple[int, int]:
    """``(last_pos, pruned_pos)``; ``lock`` (in a write) holds the row until commit.

    A missing row (a database emptied by hand) is created from the positions events hold.
    """
    rows = await (_COUNTERS_LOCKED if lock else _COUNTERS).rows(conn)
    if not rows:
        if not lock:
            return 0, 0
        top = await conn.scalar(select(func.coalesce(func.max(events.c.pos), 0)))
        await conn.execute(
            dialect.insert(conn, event_stream)
            .values(id=_ROW, last_pos=int(top or 0), pruned_pos=0)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        rows = await _COUNTERS_LOCKED.rows(conn)
        assert rows
    return int(rows[0][0]), int(rows[0][1])


async def unplaced(conn: AsyncConnection, limit: int) -> list[int]:
    """The seqs of up to ``limit`` events without a position yet, oldest first."""
    return [int(row[0]) for row in await _UNPLACED.rows(conn, limit=limit)]


class Assigned(NamedTuple):
    given: int  # events given a position
    last: int  # the stream's last position once the transaction commits


async def assign(conn: AsyncConnection, *, limit: int = ASSIGN_BATCH) -> Assigned:
    """Give the next positions to up to ``limit`` committed events that have none, in seq
    order. Run in a write transaction of its own, committed at once."""
    last, _ = await counters(conn, lock=True)
    # Read after the lock is held: a new statement, so it sees every transaction that
    # committed before, the previous assigner's included.
    seqs = await unplaced(conn, limit)
    if not seqs:
        return Assigned(0, last)
    await _GIVE.run(conn, [(seq, last + n) for n, seq in enumerate(seqs, start=1)])
    await _SET_LAST.run(conn, last=last + len(seqs))
    return Assigned(len(seqs), last + len(seqs))


async def pruned(conn: AsyncConnection, top: int) -> None:
    """Record that pruning deleted events up to position ``top``."""
    await counters(conn, lock=True)
    await conn.execute(
        update(event_stream)
        .where(event_stream.c.id == _ROW, event_stream.c.pruned_pos < top)
        .values(pruned_pos=top)
    )


@contextlib.asynccontextmanager
async def snapshot(store: Store) -> AsyncIterator[AsyncConnection]:
    """A read transaction that sees one snapshot (what :func:`read` needs)."""
    async with store.read() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn


@dataclass(frozen=True, slots=True)
class StreamEvent:
    pos: int
    id: str
    account: str | None
    event: str
    path: str | None
    created_ms: int
    # The exact bytes webhooks sign and send.
    payload: str


@dataclass(frozen=True, slots=True)
class Page:
    events: list[StreamEvent]
    # Where the next page starts: the last event's position when the page is full, else
    # the stream's last position (the events after ``after`` that the filters skipped
    # need not be read again).
    next: int
    more: bool
    # The cursor is below what pruning deleted: events after it may be gone.
    expired: bool
    # The cursor is beyond every position given so far (not one of this stream's).
    ahead: bool


_COLUMNS = (
    events.c.pos,
    events.c.id,
    events.c.account,
    events.c.event,
    events.c.path,
    events.c.created_ms,
    events.c.payload,
)  # StreamEvent's fields, in its order
_PAGE = Statement(
    lambda _: (
        select(*_COLUMNS)
        .where(events.c.pos > bindparam("after"))
        .order_by(events.c.pos)
        .limit(bindparam("limit"))
    ),
    inline=False,
)


async def read(
    conn: AsyncConnection,
    *,
    after: int | None,
    limit: int,
    accounts: Sequence[str] | None = None,
    event: str | None = None,
    path: str | None = None,
) -> Page:
    """Up to ``limit`` events after position ``after`` (None: from the oldest kept), oldest
    first. ``conn`` must read one snapshot (SQLite's transactions do; on PostgreSQL,
    REPEATABLE READ): the page and the counters then agree."""
    last, pruned_pos = await counters(conn)
    start = after or 0
    if after is not None and after < pruned_pos:
        return Page([], start, False, True, False)
    if start > last:
        return Page([], start, False, False, True)
    rows: Sequence[Sequence[Any]]
    if accounts is None and event is None and path is None:
        # The window's reads (relay.store.stream.Recent) and unfiltered pages: compiled once,
        # rows straight from the driver (a burst is read into the window a batch at a time).
        rows = await _PAGE.rows(conn, after=start, limit=limit)
    else:
        where = [events.c.pos > start]
        if accounts is not None:
            where.append(events.c.account.in_(list(accounts)))
        if event is not None:
            where.append(events.c.event == event)
        if path is not None:
            where.append(events.c.path == path)
        query = select(*_COLUMNS).where(*where).order_by(events.c.pos).limit(limit)
        rows = (await conn.execute(query)).all()
    found = [StreamEvent(*r) for r in rows]
    more = len(found) == limit
    following = found[-1].pos if more else last
    return Page(found, following, more, False, False)


def _matches(
    e: StreamEvent, accounts: Sequence[str] | None, event: str | None, path: str | None
) -> bool:
    return (
        (accounts is None or e.account in accounts)
        and (event is None or e.event == event)
        and (path is None or e.path == path)
    )


# A page's arguments: after, limit, accounts, event, path.
_Key = tuple[int | None, int, tuple[str, ...] | None, str | None, str | None]


class Recent:
    """The newest events, every one with a position in ``(low, top]``: what streams that
    keep up read, instead of one store read per stream per change."""

    def __init__(self) -> None:
        self.low = self.top = 0
        self.pruned = 0
        # In position order; the first ``_start`` entries are dropped ones not yet compacted.
        self._events: list[StreamEvent] = []
        self._start = 0
        self._bytes = 0
        # The pages answered since ``top`` last moved: streams at the same cursor get the
        # same Page (so what they send of it is encoded once).
        self._pages: dict[
            tuple[int, int, int | None, tuple[str, ...] | None, str | None, str | None], Page
        ] = {}

    def reset(self, last: int) -> None:
        self.low = self.top = last
        self._events = []
        self._start = 0
        self._bytes = 0
        self._pages.clear()

    def extend(self, found: Sequence[StreamEvent], top: int) -> None:
        self._pages.clear()
        for e in found:
            self._events.append(e)
            self._bytes += len(e.payload)
        self.top = top
        while len(self._events) - self._start > _RECENT_EVENTS or self._bytes > _RECENT_BYTES:
            dropped = self._events[self._start]
            self._start += 1
            self._bytes -= len(dropped.payload)
            self.low = dropped.pos
        if self._start > len(self._events) // 2:
            self._events = self._events[self._start :]
            self._start = 0

    def page(
        self,
        after: int,
        limit: int,
        accounts: Sequence[str] | None,
        event: str | None,
        path: str | None,
        *,
        size: int | None = None,
    ) -> Page | None:
        """The page :func:`read` would answer, if these events hold it; else None. With
        ``size``, the page ends early (still ``more``) once its payloads reach that many
        bytes."""
        if after < self.low or after > self.top or after < self.pruned:
            return None
        key = (after, limit, size, None if accounts is None else tuple(accounts), event, path)
        page = self._pages.get(key)
        if page is None:
            if len(self._pages) >= _RECENT_PAGES:
                self._pages.clear()
            page = self._pages[key] = self._find(after, limit, size, accounts, event, path)
        return page

    def _find(
        self,
        after: int,
        limit: int,
        size: int | None,
        accounts: Sequence[str] | None,
        event: str | None,
        path: str | None,
    ) -> Page:
        first = bisect.bisect_right(self._events, after, lo=self._start, key=lambda e: e.pos)
        found: list[StreamEvent] = []
        taken = 0
        for e in itertools.islice(self._events, first, None):
            if _matches(e, accounts, event, path):
                found.append(e)
                taken += len(e.payload)
                if len(found) == limit or (size is not None and taken >= size):
                    return Page(found, e.pos, True, False, False)
        return Page(found, self.top, False, False, False)


class SharedReads:
    """The store reads of streams that fell behind :class:`Recent`, shared between them.

    Streams that fall behind together (a burst larger than the window, a window reset) sit at
    the same cursors and read the same pages: one read per page, not one per stream. The
    first stream to ask for a page reads it; the others asking for the same one meanwhile
    wait for that read, and a full page is kept for streams that ask a moment later (the
    :data:`_KEPT_PAGES` newest, at most :data:`_KEPT_BYTES` of payload). Only full pages and
    expired cursors are shared: they are final (positions never change, pruning only
    advances). A shorter page ends where the stream ended at its snapshot, which may be
    older than the waiting stream's view, so a stream that waited for one reads its own.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reading: dict[_Key, asyncio.Task[Page]] = {}
        self._kept: OrderedDict[_Key, Page] = OrderedDict()
        self._kept_bytes = 0
        # Store reads made (what tests count).
        self.store_reads = 0

    async def page(
        self,
        after: int | None,
        limit: int,
        accounts: Sequence[str] | None = None,
        event: str | None = None,
        path: str | None = None,
    ) -> Page:
        """The page :func:`read` answers for these arguments."""
        key: _Key = (after, limit, None if accounts is None else tuple(accounts), event, path)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        reading = self._reading.get(key)
        if reading is not None:
            # Shielded: a stream that goes away does not cancel the others' read.
            page = await asyncio.shield(reading)
            if page.more or page.expired:
                return page
            return await self._read(key)
        task = asyncio.create_task(self._read(key))
        self._reading[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    async def _read(self, key: _Key) -> Page:
        after, limit, accounts, event, path = key
        self.store_reads += 1
        async with snapshot(self.store) as conn:
            return await read(
                conn, after=after, limit=limit, accounts=accounts, event=event, path=path
            )

    def _finished(self, key: _Key, task: asyncio.Task[Page]) -> None:
        if self._reading.get(key) is task:
            del self._reading[key]
        if task.cancelled() or task.exception() is not None:
            return
        page = task.result()
        if not page.more or key in self._kept:
            return
        self._kept[key] = page
        self._kept_bytes += _payload_bytes(page)
        while len(self._kept) > _KEPT_PAGES or self._kept_bytes > _KEPT_BYTES:
            _, dropped = self._kept.popitem(last=False)
            self._kept_bytes -= _payload_bytes(dropped)


def _payload_bytes(page: Page) -> int:
    return sum(len(e.payload) for e in page.events)


class Sequencer:
    """Gives stored events their stream positions on this node (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        poll_interval: float,
        announce: Callable[[], None] = lambda: None,
    ) -> None:
        """``announce``: tell the other nodes positions were given (the bus)."""
        self.store = store
        self.poll_interval = poll_interval
        self._announce = announce
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # A commit on this node stored events since the last round (see stored()).
        self._stored = False
        # The stream's last position as this node last read it.
        self.last = -1
        # Streams open on this node: only while there are some is ``recent`` kept.
        self.readers = 0
        self.recent = Recent()
        self.reads = SharedReads(store)

    def wake(self) -> None:
        """Look for events without a position now (another node gave some, or may have)."""
        self._wake.set()

    def stored(self) -> None:
        """A commit on this node stored events: they wait for positions, so the next round
        gives them without a read to look first (unless another node's round took them,
        its write then finds none)."""
        self._stored = True
        self._wake.set()

    def changed(self) -> asyncio.Event:
        """An event set the next time the stream moves; take it before reading, then wait."""
        return self._changed

    async def start(self) -> None:
        if self._task is None:
            # The first round at once: events stored while no node ran one.
            self._wake.set()
            self._task = asyncio.create_task(self._run(), name="event stream sequencer")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def step(self) -> int:
        """One round: give positions to whatever waits for one; the number given."""
        stored, self._stored = self._stored, False
        if stored:
            waiting, last = True, self.last
        else:
            # Woken by another node or the poll: most rounds find nothing, so look with a
            # read before taking the write lock.
            async with self.store.read() as conn:
                last, _ = await counters(conn)
                waiting = bool(await unplaced(conn, 1))
        given = 0
        while waiting:
            async with self.store.write(notify=False) as conn:
                batch, last = await assign(conn)
            given += batch
            if batch < ASSIGN_BATCH:
                break
            # A burst larger than a batch: the window and the streams follow batch by
            # batch. Were the window brought up to date only at the end, a burst larger
            # than it would leave every stream to read the burst from the store.
            await self._moved(last)
        if given:
            self._announce()
        await self._moved(last)
        return given

    async def _moved(self, last: int) -> None:
        """The stream is at ``last`` now: bring the window up to it and wake the streams."""
        if last == self.last:
            return
        await self._keep_recent(last)
        self.last = last
        moved, self._changed = self._changed, asyncio.Event()
        moved.set()

    async def _keep_recent(self, last: int) -> None:
        """Read the events up to ``last`` into ``recent`` (one read for every stream here)."""
        recent = self.recent
        if self.readers == 0 or last < recent.top or last - recent.top > _RECENT_EVENTS:
            recent.reset(last)
            return
        async with snapshot(self.store) as conn:
            page = await read(conn, after=recent.top, limit=_RECENT_EVENTS)
            _, recent.pruned = await counters(conn)
        recent.extend(page.events, page.next)

    async def _run(self) -> None:
        delay = self.poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.step()
                delay = self.poll_interval
            except StoreError as exc:
                log.warning("event stream positions not given; will retry", error=str(exc))
                delay = min(max(delay * 2, 1.0), _RETRY_MAX)
