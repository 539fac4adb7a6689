"""Sorting database failures, and the store's outage state (one log line per outage)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest
import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from relay.config import StoreSettings
from relay.errors import StoreError, StoreUnavailable
from relay.store import Store
from relay.store.outage import Outage, is_unavailable, retry_level, store_error


class _Orig(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("driver message that may quote data")
        self.sqlstate = sqlstate


def _sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


def _dbapi(sqlstate: str | None, *, invalidated: bool = False) -> DBAPIError:
    return DBAPIError("SELECT 1", None, _Orig(sqlstate), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (OperationalError("x", None, _sqlite_error("database or disk is full", 13)), True),
        (OperationalError("x", None, _sqlite_error("database is locked", 5)), True),
        (OperationalError("x", None, _sqlite_error("disk I/O error", 10 | (3 << 8))), True),
        (OperationalError("x", None, _sqlite_error("no such table: accounts", 1)), False),
        (OperationalError("x", None, Exception("no code known")), True),
        (_dbapi("57P03"), True),  # cannot connect now (starting up)
        (_dbapi("57P01"), True),  # terminating connection due to administrator command
        (_dbapi("08006"), True),  # connection failure
        (_dbapi("53100"), True),  # disk full
        (_dbapi(None, invalidated=True), True),
        (_dbapi("40P01"), False),  # deadlock: a retry may succeed, but the server is fine
        (_dbapi(None), False),
        (IntegrityError("x", None, Exception("duplicate key")), False),
        (ProgrammingError("x", None, Exception("syntax error")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_is_unavailable(exc: BaseException, unavailable: bool) -> None:
    """Only failures that waiting can cure count as the store being unavailable."""
    assert is_unavailable(exc) is unavailable
    error = store_error(exc, "write")
    assert isinstance(error, StoreUnavailable) is unavailable
    assert isinstance(error, StoreError)


def test_store_error_never_quotes_a_driver_message() -> None:
    """A driver's message may hold data: only its class is named (OS errors keep their text)."""
    error = store_error(IntegrityError("x", None, Exception("Key (email)=(a@b.c)")), "write")
    assert "a@b.c" not in str(error)
    assert str(error) == "database write failed: IntegrityError"
    refused = store_error(ConnectionRefusedError(111, "Connection refused"), "read")
    assert "Connection refused" in str(refused)


def test_retry_level() -> None:
    """Callers retrying through an outage log at debug (the store logged it once)."""
    assert retry_level(StoreUnavailable("down")) == logging.DEBUG
    assert retry_level(StoreError("bug")) == logging.WARNING


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_log_line_per_outage_and_one_when_it_ends() -> None:
    """Many failures make one outage: one warning at its start, one line at its end."""
    clock = _Clock()
    outage = Outage(clock)
    seen: list[bool] = []
    outage.listeners.append(seen.append)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            outage.failed(StoreUnavailable("down"), write=False)
        clock.now += 12.5
        outage.succeeded(write=False)
        outage.succeeded(write=False)
    assert [entry["event"] for entry in logs] == [
        "store unavailable; writes are retried",
        "store available again",
    ]
    assert logs[1]["down_s"] == 12.5
    assert seen == [True, False]
    assert outage.count == 1
    assert not outage.down


def test_a_plain_store_error_is_no_outage() -> None:
    """A failed statement (a bug, a constraint) says nothing about the database's health."""
    outage = Outage()
    outage.failed(StoreError("database write failed: IntegrityError"), write=True)
    assert not outage.down


def test_an_outage_of_writes_ends_with_a_write() -> None:
    """A full disk fails writes while reads succeed: reads do not end that outage."""
    clock = _Clock()
    outage = Outage(clock)
    outage.failed(StoreUnavailable("disk full"), write=True)
    clock.now += 10
    outage.succeeded(write=False)
    assert outage.down
    outage.succeeded(write=True)
    assert not outage.down
    # An outage seen by reads (the server down) ends with any success.
    outage.failed(StoreUnavailable("down"), write=False)
    clock.now += 10
    outage.succeeded(write=False)
    assert not outage.down


def test_a_flapping_store_is_one_outage() -> None:
    """Writes that fail and succeed by turns (a disk with a few free pages) make one outage:
    it ends only with a success some seconds after the last failure."""
    clock = _Clock()
    outage = Outage(clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(20):
            outage.failed(StoreUnavailable("disk full"), write=True)
            clock.now += 0.3
            outage.succeeded(write=True)
            clock.now += 0.3
        assert outage.down
        clock.now += 5
        outage.succeeded(write=True)
    assert not outage.down
    assert [entry["event"] for entry in logs] == [
        "store unavailable; writes are retried",
        "store available again",
    ]


async def test_waiters_wake_when_the_outage_ends() -> None:
    """A task waiting out an outage retries as soon as another task's transaction succeeds,
    not at the end of its backoff."""
    clock = _Clock()
    outage = Outage(clock)
    outage.failed(StoreUnavailable("down"), write=False)
    waiting = asyncio.create_task(outage.wait(3600, spread=0.01))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    outage.succeeded(write=False)
    await asyncio.wait_for(waiting, 5)


async def test_a_store_on_an_unreachable_postgresql_raises_store_unavailable() -> None:
    """A refused connect (the driver's own OSError) is StoreUnavailable from reads and
    writes, and the store's outage starts and ends with it."""
    store = Store.open(StoreSettings(url="postgresql://postgres@127.0.0.1:9/none"))
    try:
        with pytest.raises(StoreUnavailable):
            async with store.read():
                pass
        assert store.outage.down
        with pytest.raises(StoreUnavailable):
            async with store.write():
                pass
    finally:
        await store.close()


async def test_an_error_raised_by_the_block_passes_through(tmp_path: Path) -> None:
    """An OSError raised by the code inside a transaction is that code's, not the store's."""
    store = Store.open(StoreSettings(url=f"sqlite:///{tmp_path / 'x.db'}"))
    try:
        with pytest.raises(ConnectionResetError):
            async with store.read():
                raise ConnectionResetError("the IMAP server went away")
        assert not store.outage.down
    finally:
        await store.close()


async def test_an_outage_ends_without_more_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    """A success right after the last failure ends the outage once the settling time has
    passed, even if no other transaction comes (an idle relay must not look down forever)."""
    monkeypatch.setattr("relay.store.outage._SETTLE", 0.05)
    outage = Outage()
    ended = asyncio.Event()
    outage.listeners.append(lambda down: None if down else ended.set())
    outage.failed(StoreUnavailable("disk full"), write=True)
    outage.succeeded(write=True)
    assert outage.down
    await asyncio.wait_for(ended.wait(), 5)
    assert not outage.down
    # A failure before the settling time is up keeps it going.
    outage.failed(StoreUnavailable("disk full"), write=True)
    outage.succeeded(write=True)
    outage.failed(StoreUnavailable("disk full"), write=True)
    await asyncio.sleep(0.2)
    assert outage.down
