"""Group commit on SQLite: writes waiting at the same moment share one transaction.

SQLite has one writer at a time. Giving each write its own transaction costs every write a
``BEGIN``, a ``COMMIT`` (writing the touched pages to the WAL) and the connection's reset,
each a round trip to the driver's thread; under a burst, those are most of the time a write
takes. Here one task, the *leader*, opens a transaction and hands its connection to the
waiting writers one after the other, each inside its own ``SAVEPOINT``:

- a writer whose block raises is rolled back to its savepoint (``ROLLBACK TO``): its writes
  are undone, the others' are kept, and only it sees the error. One exception: a writer
  cancelled while one of its statements is running makes SQLAlchemy invalidate the shared
  connection, so that group's writers all get :class:`StoreError` and nothing of the group is
  stored (none of it was acknowledged); long-lived writers therefore stop between writes
  rather than being cancelled in one (see ``DeliveryWorker.stop``);
- every writer is answered only after the ``COMMIT`` that holds its writes, so nothing is
  acknowledged that a crash could still take back; if the ``COMMIT`` fails, every writer of
  the group gets the error (none of their data was stored);
- the group closes after ``max_writers`` writers or ``max_wait_s`` seconds, whichever comes
  first, so the first writer of a busy group waits for a bounded number of others.

A writer that finds nobody else writing or waiting skips all that: it runs its own
transaction at once (no savepoint, no hand-over), so a lone write costs what it did before
grouping; writers that come while it runs wait for it and form the next group.

Savepoints are nested rather than released (``RELEASE`` would be one more round trip per
writer): ``ROLLBACK TO`` a savepoint undoes exactly the writes made after it, and ``COMMIT``
ends them all.

Written by hand because it is the store's write path: SQLAlchemy and aiosqlite give
transactions per connection, not a queue of writers sharing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import StoreError, StoreUnavailable
from relay.store import wakes
from relay.store.compiled import run_sql
from relay.store.outage import store_error

__all__ = ["GroupCommit"]

# Opens a connection with a write transaction begun, yields it, commits when the block ends.
Transaction = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]


@dataclass(eq=False, slots=True)
class _Writer:
    topic: bool | str
    # Set by the leader: the writer's turn has come (with the shared connection).
    turn: asyncio.Future[AsyncConnection]
    # Set by the writer when its block ends: None, or what the block raised.
    finished: asyncio.Future[BaseException | None] = field(init=False)
    # Set by the leader once the group's COMMIT is done (or failed).
    committed: asyncio.Future[None] = field(init=False)
    abandoned: bool = False

    def __post_init__(self) -> None:
        loop = self.turn.get_loop()
        self.finished = loop.create_future()
        self.committed = loop.create_future()


class GroupCommit:
    """The queue of writers of one SQLite store (see the module docstring)."""

    def __init__(
        self,
        transaction: Transaction,
        on_commit: Callable[[list[bool | str]], None],
        *,
        max_writers: int = 64,
        max_wait_s: float = 0.02,
        queue_wait_s: float = 30.0,
    ) -> None:
        self._transaction = transaction
        self._on_commit = on_commit
        self.max_writers = max_writers
        self.max_wait_s = max_wait_s
        self.queue_wait_s = queue_wait_s
        self._waiting: deque[_Writer] = deque()
        self._leader: asyncio.Task[None] | None = None
        # A writer is in a transaction of its own (see _alone).
        self._solo = False
        # Groups committed and writers in them (what the group-commit tests look at).
        self.groups = 0
        self.writers = 0

    @asynccontextmanager
    async def write(self, topic: bool | str) -> AsyncIterator[AsyncConnection]:
        """A turn on the shared transaction; returns once the writes are committed."""
        if not self._solo and not self._waiting and not self._leading:
            async with self._alone(topic) as conn:
                yield conn
            return
        writer = _Writer(topic, asyncio.get_running_loop().create_future())
        self._waiting.append(writer)
        if not self._solo and not self._leading:
            self._start_leader()
        try:
            async with asyncio.timeout(self.queue_wait_s):
                conn = await asyncio.shield(writer.turn)
        except BaseException as exc:
            writer.abandoned = True
            if writer.turn.done() and not writer.turn.cancelled():
                # The turn came as the wait ended: give it back, nothing was written.
                writer.finished.set_result(exc)
            if isinstance(exc, TimeoutError):
                raise StoreUnavailable("database write failed: busy for too long") from None
            raise
        try:
            yield conn
        except BaseException as exc:
            writer.finished.set_result(exc)
            if isinstance(exc, SQLAlchemyError):
                raise _write_failed(exc) from exc
            raise
        writer.finished.set_result(None)
        # Shielded: a writer cancelled now cannot take its writes out of the group.
        await asyncio.shield(writer.committed)

    @asynccontextmanager
    async def _alone(self, topic: bool | str) -> AsyncIterator[AsyncConnection]:
        """Nobody else is writing: a transaction of the writer's own, with no savepoint and no
        hand-over to the leader task. Writers that come meanwhile queue; the leader starts
        for them once this transaction is over."""
        self._solo = True
        try:
            try:
                async with self._transaction() as conn:
                    yield conn
            except (SQLAlchemyError, OSError) as exc:
                raise _write_failed(exc) from exc
        finally:
            self._solo = False
            if self._waiting:
                self._start_leader()
        self.groups += 1
        self.writers += 1
        self._on_commit([topic])

    @property
    def _leading(self) -> bool:
        """Whether the leader task is running (or about to)."""
        return self._leader is not None and not self._leader.done()

    def _start_leader(self) -> None:
        self._leader = asyncio.create_task(self._lead(), name="store group commit")

    async def close(self) -> None:
        """Stop: the group running now is rolled back (its writers get CancelledError, as do
        the writers still waiting), and its connection goes back to the pool."""
        leader, self._leader = self._leader, None
        if leader is not None and not leader.done():
            leader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leader
        self._cancel_waiting()

    def _cancel_waiting(self) -> None:
        while self._waiting:
            self._waiting.popleft().turn.cancel()

    async def _lead(self) -> None:
        while self._waiting:
            await self._group()

    async def _group(self) -> None:
        members: list[_Writer] = []
        turned = False  # whether any writer was handed the connection in this group
        try:
            async with self._transaction() as conn:
                started = time.monotonic()
                while self._waiting and len(members) < self.max_writers:
                    if members and time.monotonic() - started >= self.max_wait_s:
                        break
                    writer = self._waiting[0]
                    if writer.abandoned:
                        self._waiting.popleft()
                        continue
                    savepoint = f"w{len(members)}"
                    asked = wakes.requested(conn)
                    await run_sql(conn, f"SAVEPOINT {savepoint}")
                    self._waiting.popleft()
                    writer.turn.set_result(conn)
                    turned = True
                    # Shielded: closing the store must not cancel a block still running.
                    raised = await asyncio.shield(writer.finished)
                    if raised is None:
                        members.append(writer)
                    else:
                        await run_sql(conn, f"ROLLBACK TO {savepoint}")
                        wakes.restore(conn, asked)
        except BaseException as exc:
            self._fail(exc, members, turned=turned)
            if not isinstance(exc, Exception):
                raise
            return
        self.groups += 1
        self.writers += len(members)
        for writer in members:
            writer.committed.set_result(None)
        self._on_commit([w.topic for w in members])

    def _fail(self, exc: BaseException, members: list[_Writer], *, turned: bool) -> None:
        """The transaction could not begin, broke mid-group or could not commit: none of
        the group's writes were stored. Its writers get the error; the writers still waiting
        get it too when not one of them could be handed the connection (the database
        refuses writes now: retrying at once would only spin), else they wait for the next
        group."""
        if isinstance(exc, asyncio.CancelledError):  # the store is closing
            for writer in members:
                writer.committed.cancel()
            self._cancel_waiting()
            return
        error = _write_failed(exc) if isinstance(exc, SQLAlchemyError | OSError) else exc
        for writer in members:
            writer.committed.set_exception(error)
        if not turned:
            while self._waiting:
                writer = self._waiting.popleft()
                if not writer.turn.done():
                    writer.turn.set_exception(error)


def _write_failed(exc: BaseException) -> StoreError:
    """What writers see of a database error (its class, never its text: it may hold data)."""
    return store_error(exc, "write")
