"""Database failures sorted for the caller, and one log line per outage instead of one per try.

A failure is *unavailability* when retrying later can succeed without anyone changing code:
the server refused or dropped the connection, is starting up or shutting down, is out of disk
or connections, or (SQLite) the disk is full or the file is locked. Everything else (a
constraint violated, a malformed statement) is a plain :class:`StoreError`.

:class:`Outage` is the store's view of its own health: the first unavailable failure logs
``store unavailable`` (warning) and every later one is quiet until a transaction succeeds
again, which logs ``store available again`` with how long it was down. Callers that retry
log their own failures at debug level while :attr:`Outage.down` is true.
"""

from __future__ import annotations

import asyncio
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


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver or SQLAlchemy error) means the database is unusable now."""
    if isinstance(exc, OSError):
        # Refused or timed-out connects reach us unwrapped (TimeoutError is an OSError).
        return True
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(code, str):
            return code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES
    return False


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

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: StoreError) -> None:
        """A transaction failed with ``error``; only unavailability starts an outage."""
        if not isinstance(error, StoreUnavailable) or self.since is not None:
            return
        self.since = self._clock()
        self.count += 1
        self._over = asyncio.Event()
        log.warning("store unavailable; writes are retried", error=str(error))
        for listener in self.listeners:
            listener(True)

    def succeeded(self) -> None:
        """A transaction committed (or a read finished): an outage, if any, is over."""
        if self.since is None:
            return
        down_s = round(self._clock() - self.since, 1)
        self.since = None
        self._over.set()
        log.info("store available again", down_s=down_s)
        for listener in self.listeners:
            listener(False)

    async def wait(self, seconds: float, spread: float = 1.0) -> None:
        """Wait ``seconds`` before retrying, or less: until the outage is over (another task's
        transaction succeeded) and then a random part of ``spread`` seconds, so that
        thousands of waiting tasks do not all retry in the same instant."""
        if self.since is not None:
            over = self._over
            try:
                async with asyncio.timeout(seconds):
                    await over.wait()
            except TimeoutError:
                return
        await asyncio.sleep(random.uniform(0, min(spread, seconds)))
