"""SQLite is single-node: a running node holds a lock file beside the database.

Two nodes on one SQLite file would both watch every mailbox (leases make them take turns,
not share) and fight over the one writer; several nodes need PostgreSQL. ``relay serve``
takes an exclusive ``flock`` on ``<database>.node-lock`` for as long as it runs; the kernel
drops it when the process ends, however it ends (``kill -9`` included), so a restart is
never refused because of a node that is gone. Other commands (``relay migrate``,
``relay token``) do not take it: they may run beside the node. The lock is the process's:
applications built in one process (tests do) share it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine.url import make_url

from relay.errors import ConfigError

__all__ = ["NodeLock"]

# Lock file -> (descriptor, holders in this process).
_HELD: dict[Path, tuple[int, int]] = {}


class NodeLock:
    """The lock of one SQLite store (nothing for PostgreSQL or an in-memory database)."""

    def __init__(self, store_url: str) -> None:
        url = make_url(store_url)
        database = url.database if url.get_backend_name() == "sqlite" else None
        self.path = (
            Path(database).resolve().with_name(Path(database).name + ".node-lock")
            if database and database != ":memory:"
            else None
        )
        self._held = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ConfigError` naming the store when a node runs."""
        if self.path is None or self._held:
            return
        if self.path in _HELD:
            fd, holders = _HELD[self.path]
            _HELD[self.path] = (fd, holders + 1)
            self._held = True
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                "store.url",
                f"another relay node is running on the SQLite store {self.path.with_suffix('')}; "
                "SQLite is single-node: run several nodes on one PostgreSQL store",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[self.path] = (fd, 1)
        self._held = True

    def release(self) -> None:
        """Give the lock up (the process ending does it too)."""
        if self.path is None or not self._held:
            return
        self._held = False
        fd, holders = _HELD.pop(self.path)
        if holders > 1:
            _HELD[self.path] = (fd, holders - 1)
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
