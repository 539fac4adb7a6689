"""Database failures sorted for the caller, and one log line per outage instead of one per try.

A failure is *unavailability* when retrying later can succeed without anyone changing code:
the server refused or dropped the connection, is starting up or shutting down, is out of disk
or connections, or (SQLite) the disk is full, the file is locked or cannot be opened.
Everything else (a constraint violated, a missing table, a malformed statement) is a plain
:class:`StoreError`.

:class:`Outage` is the store's view of its own health: the first unavailable failure logs
``store unavailable`` (warning) and every later one is quiet until a transaction succeeds
again, which logs ``store available again`` with how long it was down. Callers that retry
log their own failures at debug level while :attr:`Outage.down` is true.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from relay.errors import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)

# PostgreSQL SQLSTATE classes and codes that mean "not now": connection exceptions (08),
# insufficient resources (53: disk full, out of memory, too many connections), operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_CODES = frozenset({"57P01", "57P02", "57P03"})

# SQLite primary result codes that mean "not now": BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN,
# PROTOCOL (https://sqlite.org/rescode.html).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 10, 13, 14, 15})

# Seconds without a failure before a success ends an outage.
_SETTLE = 2.0


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver or SQLAlchemy error) means the database is unusable now."""
    if isinstance(exc, OSError):
        # Refused or timed-out connects reach us unwrapped (TimeoutError is an OSError).
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    # SQLite's OperationalError covers a missing table as well as a full disk: its code tells.
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in _SQLITE_UNAVAILABLE
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(code, str):
        return code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES
    return isinstance(exc, OperationalError | InterfaceError)


def store_error(exc: BaseException, what: str) -> StoreError:
    """``exc`` as the error tree's StoreError; names the class only (a driver's message may
    quote the data), except for OS errors, whose text is the reason (``Connection refused``)."""
    if not is_unavailable(exc):
        return StoreError(f"database {what} failed: {exc.__class__.__name__}")
    detail = f": {exc}" if isinstance(exc, OSError) and str(exc) else ""
    return StoreUnavailable(f"database unavailable: {exc.__class__.__name__}{detail}")


def retry_level(exc: BaseException) -> int:
    """The log level of a caller's failure it will retry: debug for unavailability (the store
    has logged the outage once), warning for anything else."""
    return logging.DEBUG if isinstance(exc, StoreUnavailable) else logging.WARNING


class Outage:
    """Whether the store is down now, since when, and how many outages there were."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.since: float | None = None
        self.count = 0
        # Called with True when an outage starts and False when it ends (metrics).
        self.listeners: list[Callable[[bool], None]] = []
        self._over = asyncio.Event()
        self._writes_failing = False
        self._last_failure = 0.0
        self._last_success = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: StoreError, *, write: bool) -> None:
        """A transaction failed with ``error``; only unavailability starts an outage."""
        if not isinstance(error, StoreUnavailable):
            return
        # A disk that is full, or a lock held elsewhere, fails writes but not reads: such an
        # outage ends with a write, not with the next read.
        self._writes_failing = self._writes_failing or write
        self._last_failure = self._clock()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._over.is_set():
            self._over = asyncio.Event()
        if self.since is not None:
            return
        self.since = self._last_failure
        self.count += 1
        log.warning("store unavailable; writes are retried", error=str(error))
        for listener in self.listeners:
            listener(True)

    def succeeded(self, *, write: bool) -> None:
        """A transaction committed (or a read finished): an outage, if any, is over (one
        that failed writes only once a write succeeds)."""
        if self.since is None or (self._writes_failing and not write):
            return
        # Waiters retry at once; but a store that still fails now and then (a disk with a
        # few free pages) is not back yet: the outage ends _SETTLE s after the last failure
        # if a success came after it, so that it is logged once, not once per flap.
        self._over.set()
        self._last_success = self._clock()
        self._settle()

    def _settle(self) -> None:
        self._timer = None
        if self.since is None or self._last_success <= self._last_failure:
            return
        left = _SETTLE - (self._clock() - self._last_failure)
        if left > 0:
            with contextlib.suppress(RuntimeError):  # no loop: the next success decides
                self._timer = asyncio.get_running_loop().call_later(left, self._settle)
            return
        self._writes_failing = False
        down_s = round(self._last_success - self.since, 1)
        self.since = None
        log.info("store available again", down_s=down_s)
        for listener in self.listeners:
            listener(False)

    async def wait(self, seconds: float, spread: float = 1.0) -> None:
        """Wait ``seconds`` before retrying, or less: until another task's transaction
        succeeds, and then a random part of ``spread`` seconds, so that thousands of waiting
        tasks do not all retry in the same instant."""
        if self.since is not None:
            over = self._over
            try:
                async with asyncio.timeout(seconds):
                    await over.wait()
            except TimeoutError:
                return
        await asyncio.sleep(random.uniform(0, min(spread, seconds)))
