"""The outbox queue: insert, claim, finish, reap, and the listing of ``GET /v1/outbox``.

Claims follow the delivery queue (``relay.store.deliveries``): on PostgreSQL ``SELECT ... FOR
UPDATE SKIP LOCKED`` inside the ``UPDATE ... RETURNING``; on SQLite the write transaction
serialises claimers. A claimed message is ``sending`` with a lease; when its node dies,
:func:`reap` makes it ``queued`` again once the lease has run out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.schema import OutboxStatus, outbox

S = OutboxStatus


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message taken for one attempt."""

    queue_id: str
    account: str
    message_id: str
    envelope: dict[str, Any]
    raw: bytes
    attempts: int
    max_attempts: int


async def insert(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    await conn.execute(outbox.insert().values(**values))


async def get(conn: AsyncConnection, queue_id: str) -> RowMapping | None:
    return (
        (await conn.execute(select(outbox).where(outbox.c.queue_id == queue_id))).mappings().first()
    )


async def by_idempotency_key(conn: AsyncConnection, account: str, key: str) -> RowMapping | None:
    query = select(outbox).where(outbox.c.account == account, outbox.c.idempotency_key == key)
    return (await conn.execute(query)).mappings().first()


async def forget_idempotency_key(conn: AsyncConnection, queue_id: str) -> None:
    """Free the key of an old submit so that a new one may use it."""
    await conn.execute(
        update(outbox).where(outbox.c.queue_id == queue_id).values(idempotency_key=None)
    )


async def page(
    conn: AsyncConnection, *, offset: int, limit: int, account: str | None = None
) -> tuple[int, Sequence[RowMapping]]:
    where = [outbox.c.account == account] if account else []
    total = int(await conn.scalar(select(func.count()).select_from(outbox).where(*where)) or 0)
    rows = await conn.execute(
        select(outbox).where(*where).order_by(outbox.c.seq).offset(offset).limit(limit)
    )
    return total, rows.mappings().all()


async def remove(conn: AsyncConnection, queue_id: str) -> bool:
    result = await conn.execute(delete(outbox).where(outbox.c.queue_id == queue_id))
    return bool(result.rowcount)


async def claim(
    conn: AsyncConnection, *, now: int, limit: int, lease_until: int, node: str
) -> list[Claimed]:
    """Take up to ``limit`` due queued messages."""
    due = (
        select(outbox.c.seq)
        .where(outbox.c.status == S.QUEUED, outbox.c.next_attempt_ms <= now)
        .order_by(outbox.c.next_attempt_ms, outbox.c.seq)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(outbox)
        .where(outbox.c.seq.in_(due.scalar_subquery()))
        .values(status=S.SENDING, lease_until_ms=lease_until, claimed_by=node, updated_ms=now)
        .returning(
            outbox.c.queue_id,
            outbox.c.account,
            outbox.c.message_id,
            outbox.c.envelope,
            outbox.c.raw,
            outbox.c.attempts,
            outbox.c.max_attempts,
        )
    )
    return [
        Claimed(
            queue_id=str(r["queue_id"]),
            account=str(r["account"]),
            message_id=str(r["message_id"]),
            envelope=dict(r["envelope"]),
            raw=bytes(r["raw"]),
            attempts=int(r["attempts"]),
            max_attempts=int(r["max_attempts"]),
        )
        for r in result.mappings()
    ]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, for :func:`finish_many`."""

    queue_id: str
    now: int
    status: str
    attempts: int
    next_attempt_ms: int | None = None
    error: str | None = None
    response: str | None = None


_FINISH_SENT = (
    update(outbox)
    .where(
        outbox.c.queue_id == bindparam("b_queue_id"),
        outbox.c.status == S.SENDING,
        outbox.c.claimed_by == bindparam("b_node"),
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        lease_until_ms=None,
        claimed_by=None,
        updated_ms=bindparam("b_now"),
        last_error=bindparam("b_error"),
        response=bindparam("b_response"),
        sent_ms=bindparam("b_now"),
        # The content is not needed any more; the row stays for the listing and the key.
        raw=b"",
    )
)

_FINISH_OTHER = (
    update(outbox)
    .where(
        outbox.c.queue_id == bindparam("b_queue_id"),
        outbox.c.status == S.SENDING,
        outbox.c.claimed_by == bindparam("b_node"),
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        lease_until_ms=None,
        claimed_by=None,
        updated_ms=bindparam("b_now"),
        last_error=bindparam("b_error"),
        response=bindparam("b_response"),
        next_attempt_ms=func.coalesce(
            bindparam("b_next", type_=outbox.c.next_attempt_ms.type), outbox.c.next_attempt_ms
        ),
    )
)


async def finish_many(conn: AsyncConnection, outcomes: Sequence[Outcome], *, node: str) -> set[str]:
    """Record attempts' outcomes; return the queue ids this node still held.

    A message deleted meanwhile, or taken back after the lease ran out, is not touched.
    Three statements for any number of outcomes: which rows are held (locked on PostgreSQL
    so that no reaper takes them back meanwhile), then one update per kind of outcome.
    """
    if not outcomes:
        return set()
    ids = [o.queue_id for o in outcomes]
    query = select(outbox.c.queue_id).where(
        outbox.c.queue_id.in_(ids), outbox.c.status == S.SENDING, outbox.c.claimed_by == node
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    held = {str(q) for q in (await conn.execute(query)).scalars()}
    sent, other = [], []
    for o in outcomes:
        if o.queue_id not in held:
            continue
        params = {
            "b_queue_id": o.queue_id,
            "b_node": node,
            "b_status": o.status,
            "b_attempts": o.attempts,
            "b_now": o.now,
            "b_error": o.error,
            "b_response": o.response,
        }
        if o.status == S.SENT:
            sent.append(params)
        else:
            other.append({**params, "b_next": o.next_attempt_ms})
    if sent:
        await conn.execute(_FINISH_SENT, sent)
    if other:
        await conn.execute(_FINISH_OTHER, other)
    return held


async def release(conn: AsyncConnection, queue_ids: Sequence[str], *, node: str, now: int) -> None:
    """Give back messages claimed but not attempted (shutdown)."""
    if not queue_ids:
        return
    await conn.execute(
        update(outbox)
        .where(
            outbox.c.queue_id.in_(list(queue_ids)),
            outbox.c.status == S.SENDING,
            outbox.c.claimed_by == node,
        )
        .values(status=S.QUEUED, lease_until_ms=None, claimed_by=None, updated_ms=now)
    )


async def reap(conn: AsyncConnection, *, now: int) -> int:
    """Queue again the messages whose lease ran out (their node died mid-attempt)."""
    result = await conn.execute(
        update(outbox)
        .where(outbox.c.status == S.SENDING, outbox.c.lease_until_ms < now)
        .values(status=S.QUEUED, lease_until_ms=None, claimed_by=None, updated_ms=now)
    )
    return int(result.rowcount or 0)


async def prune(conn: AsyncConnection, *, before_ms: int) -> None:
    """Drop finished messages older than ``before_ms``."""
    await conn.execute(
        delete(outbox).where(
            outbox.c.status.in_((S.SENT, S.FAILED)), outbox.c.updated_ms < before_ms
        )
    )
