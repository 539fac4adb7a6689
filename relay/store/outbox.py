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

from sqlalchemy import (
    Insert,
    Integer,
    bindparam,
    delete,
    func,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store import dialect
from relay.store.compiled import Statement, any_of
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
    # The message this one replies to or forwards: ``{message, action}``.
    reference: dict[str, Any] | None = None
    # The submit's ``copy`` and ``sentMailPath`` (relay.send.sentcopy).
    copy: bool | None = None
    sent_mail_path: str | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """What became of one submit: its own row, or the earlier one its Idempotency-Key names.

    ``replayed``: an earlier submit with the same key and body; ``conflict``: with the same key
    and another body. ``row`` holds ``queue_id``, ``message_id`` and ``send_at_ms``.
    """

    row: Mapping[Any, Any]
    replayed: bool = False
    conflict: bool = False


_ANSWER = (outbox.c.queue_id, outbox.c.message_id, outbox.c.send_at_ms, outbox.c.request_hash)


def _insert_new(conn: AsyncConnection) -> Insert:
    """An insert that skips a row whose (account, Idempotency-Key) another submit holds."""
    target = [outbox.c.account, outbox.c.idempotency_key]
    made: Insert = dialect.insert(conn, outbox).on_conflict_do_nothing(index_elements=target)
    return made


async def _by_keys(
    conn: AsyncConnection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], RowMapping]:
    if not keys:
        return {}
    query = select(outbox.c.account, outbox.c.idempotency_key, outbox.c.created_ms, *_ANSWER)
    # An expanding IN: one cached statement whatever the number of keys.
    query = query.where(tuple_(outbox.c.account, outbox.c.idempotency_key).in_(sorted(keys)))
    rows = (await conn.execute(query)).mappings()
    return {(str(r["account"]), str(r["idempotency_key"])): r for r in rows}


def _answer(row: Mapping[Any, Any], request_hash: Any) -> Admitted:
    if row["request_hash"] != request_hash:
        return Admitted(row, conflict=True)
    return Admitted(row, replayed=True)


async def insert_many(
    conn: AsyncConnection, rows: Sequence[Mapping[Any, Any]], *, keys_since_ms: int
) -> list[Admitted]:
    """Insert submits (full ``outbox`` rows), honouring their Idempotency-Keys.

    A key used since ``keys_since_ms`` answers with the row that used it (also when that row
    is earlier in ``rows``, or committed meanwhile by a concurrent transaction: the insert
    skips conflicting rows, on PostgreSQL after waiting for the other transaction); an older
    use of a key is forgotten. A few statements for any number of rows.
    """
    keys = {(str(r["account"]), str(r["idempotency_key"])) for r in rows if r["idempotency_key"]}
    earlier = await _by_keys(conn, keys)
    stale = [r["queue_id"] for r in earlier.values() if r["created_ms"] < keys_since_ms]
    if stale:
        await conn.execute(
            update(outbox).where(outbox.c.queue_id.in_(stale)).values(idempotency_key=None)
        )
    holders: dict[tuple[str, str], Mapping[Any, Any]] = {
        k: r for k, r in earlier.items() if r["created_ms"] >= keys_since_ms
    }
    out: list[Admitted | None] = []
    new: list[Mapping[Any, Any]] = []
    for row in rows:
        key = (str(row["account"]), str(row["idempotency_key"]))
        holder = holders.get(key) if row["idempotency_key"] else None
        if holder is not None:
            out.append(_answer(holder, row["request_hash"]))
            continue
        if row["idempotency_key"]:
            holders[key] = row
        new.append(row)
        out.append(None)
    if new:
        await conn.execute(_insert_new(conn), [dict(r) for r in new])
    # A concurrent transaction may have committed the same key first: its row is the answer.
    new_keys = {(str(r["account"]), str(r["idempotency_key"])) for r in new if r["idempotency_key"]}
    won: Mapping[tuple[str, str], Mapping[Any, Any]] = await _by_keys(conn, new_keys)
    answers = iter(new)
    result = []
    for admitted in out:
        if admitted is not None:
            result.append(admitted)
            continue
        row = next(answers)
        key = (str(row["account"]), str(row["idempotency_key"]))
        holder = won.get(key) if row["idempotency_key"] else None
        if holder is not None and holder["queue_id"] != row["queue_id"]:
            result.append(_answer(holder, row["request_hash"]))
        else:
            result.append(Admitted(row))
    return result


async def get(conn: AsyncConnection, queue_id: str) -> RowMapping | None:
    return (
        (await conn.execute(select(outbox).where(outbox.c.queue_id == queue_id))).mappings().first()
    )


async def page(
    conn: AsyncConnection,
    *,
    offset: int,
    limit: int,
    account: str | None = None,
    status: str | None = None,
    only: Sequence[str] | None = None,
) -> tuple[int, Sequence[RowMapping]]:
    """A page of the queue; ``account``: one account's, ``status``: in that state only,
    ``only``: among these accounts."""
    where = [outbox.c.account == account] if account else []
    if status:
        where.append(outbox.c.status == status)
    if only is not None:
        where.append(outbox.c.account.in_(only))
    total = int(await conn.scalar(select(func.count()).select_from(outbox).where(*where)) or 0)
    rows = await conn.execute(
        select(outbox).where(*where).order_by(outbox.c.seq).offset(offset).limit(limit)
    )
    return total, rows.mappings().all()


async def retry(conn: AsyncConnection, queue_id: str, *, now: int) -> bool:
    """Queue a failed message again, due now, with its attempts reset (and its last error
    and answer cleared: they belong to the attempts that are forgotten). False when it is
    not failed (any more)."""
    result = await conn.execute(
        update(outbox)
        .where(outbox.c.queue_id == queue_id, outbox.c.status == S.FAILED)
        .values(
            status=S.QUEUED,
            attempts=0,
            next_attempt_ms=now,
            last_error=None,
            response=None,
            updated_ms=now,
        )
    )
    return bool(result.rowcount)


async def remove(conn: AsyncConnection, queue_id: str) -> bool:
    result = await conn.execute(delete(outbox).where(outbox.c.queue_id == queue_id))
    return bool(result.rowcount)


def _claim_statement(*, skip_locked: bool) -> Any:
    """``UPDATE ... RETURNING`` of the due queued messages to ``sending``, built once."""
    due = (
        select(outbox.c.seq)
        .where(outbox.c.status == S.QUEUED, outbox.c.next_attempt_ms <= bindparam("b_due"))
        .order_by(outbox.c.next_attempt_ms, outbox.c.seq)
        .limit(bindparam("b_limit", type_=Integer))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return (
        update(outbox)
        .where(outbox.c.seq.in_(due.scalar_subquery()))
        .values(
            status=S.SENDING,
            lease_until_ms=bindparam("b_lease"),
            claimed_by=bindparam("b_node"),
            updated_ms=bindparam("b_now"),
        )
        .returning(
            outbox.c.queue_id,
            outbox.c.account,
            outbox.c.message_id,
            outbox.c.envelope,
            outbox.c.raw,
            outbox.c.attempts,
            outbox.c.max_attempts,
            outbox.c.reference,
            outbox.c.copy,
            outbox.c.sent_mail_path,
        )
    )


# Built once, not per claim: a claim runs for every round of attempts.
_CLAIM = {False: _claim_statement(skip_locked=False), True: _claim_statement(skip_locked=True)}


async def claim(
    conn: AsyncConnection, *, now: int, limit: int, lease_until: int, node: str
) -> list[Claimed]:
    """Take up to ``limit`` due queued messages."""
    result = await conn.execute(
        _CLAIM[conn.dialect.name == "postgresql"],
        {"b_due": now, "b_limit": limit, "b_lease": lease_until, "b_node": node, "b_now": now},
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
            reference=dict(r["reference"]) if r["reference"] else None,
            copy=None if r["copy"] is None else bool(r["copy"]),
            sent_mail_path=r["sent_mail_path"],
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


def _finish(**extra: Any) -> Any:
    """An UPDATE of one message this node holds as ``sending`` to its outcome."""
    return (
        update(outbox)
        .where(
            outbox.c.queue_id == bindparam("queue_id"),
            outbox.c.status == S.SENDING,
            outbox.c.claimed_by == bindparam("node"),
        )
        .values(
            status=bindparam("status"),
            attempts=bindparam("attempts"),
            lease_until_ms=null(),
            claimed_by=null(),
            updated_ms=bindparam("now"),
            last_error=bindparam("error"),
            response=bindparam("response"),
            **extra,
        )
    )


_FINISH_COLUMNS = ("queue_id", "node", "status", "attempts", "now", "error", "response")
# The content is not needed any more once sent; the row stays for the listing and the key.
_FINISH_SENT = Statement(
    lambda _: _finish(sent_ms=bindparam("now"), raw=b""),
    columns=_FINISH_COLUMNS,
)
_FINISH_OTHER = Statement(
    lambda _: _finish(
        next_attempt_ms=func.coalesce(
            bindparam("next", type_=outbox.c.next_attempt_ms.type), outbox.c.next_attempt_ms
        )
    ),
    columns=(*_FINISH_COLUMNS, "next"),
)


def _held_statement(dialect: str) -> Any:
    query = select(outbox.c.queue_id).where(
        any_of(outbox.c.queue_id, "ids", dialect),
        outbox.c.status == S.SENDING,
        outbox.c.claimed_by == bindparam("node"),
    )
    return query.with_for_update() if dialect == "postgresql" else query


_HELD = Statement(_held_statement, lists=("ids",))


async def finish_many(conn: AsyncConnection, outcomes: Sequence[Outcome], *, node: str) -> set[str]:
    """Record attempts' outcomes; return the queue ids this node still held.

    A message deleted meanwhile, or taken back after the lease ran out, is not touched.
    Three statements for any number of outcomes: which rows are held (locked on PostgreSQL
    so that no reaper takes them back meanwhile), then one update per kind of outcome.
    """
    if not outcomes:
        return set()
    rows = await _HELD.rows(conn, ids=sorted({o.queue_id for o in outcomes}), node=node)
    held = {str(r[0]) for r in rows}
    sent, other = [], []
    for o in outcomes:
        if o.queue_id not in held:
            continue
        values = (o.queue_id, node, o.status, o.attempts, o.now, o.error, o.response)
        if o.status == S.SENT:
            sent.append(values)
        else:
            other.append((*values, o.next_attempt_ms))
    await _FINISH_SENT.many(conn, sent)
    await _FINISH_OTHER.many(conn, other)
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
