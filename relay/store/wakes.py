"""Wake-ups a write asks for from inside its transaction.

``Store.write(notify=...)`` names the workers to wake before the write runs. Some writes
learn only inside the transaction whether they queued work: :func:`relay.store.events.record`
queues deliveries only for events some webhook route wants. Such code calls
:func:`wake_on_commit`; the store wakes the topic's workers once the transaction that holds
the write commits, and not at all when it is rolled back.

The requests live in the connection's ``info`` until the store takes them (:func:`take`) as
the transaction ends, so they never outlive it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["requested", "restore", "take", "wake_on_commit"]

_KEY = "relay.wake_on_commit"


def wake_on_commit(conn: AsyncConnection, topic: str) -> None:
    """Wake ``topic``'s workers (a ``Wake`` value) once the current transaction commits."""
    conn.info.setdefault(_KEY, set()).add(topic)


def requested(conn: AsyncConnection) -> frozenset[str]:
    """The topics asked for so far (kept before a savepoint, to :func:`restore` on rollback)."""
    return frozenset(conn.info.get(_KEY, ()))


def restore(conn: AsyncConnection, topics: frozenset[str]) -> None:
    """Forget the requests made after :func:`requested` returned ``topics``."""
    conn.info[_KEY] = set(topics)


def take(conn: AsyncConnection) -> set[str]:
    """The topics asked for, forgotten by the connection (call as the transaction ends)."""
    return set(conn.info.pop(_KEY, ()))
