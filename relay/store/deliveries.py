"""The delivery queue: claim, finish, reap, and the delivery log.

Claims are atomic: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the
``UPDATE ... RETURNING``, so nodes never take the same row; on SQLite the write transaction
itself (``BEGIN IMMEDIATE``) serialises claimers. A claimed row carries a lease; when the node
that holds it dies, :func:`reap` hands the row back once the lease has run out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    Select,
    bindparam,
    func,
    literal_column,
    not_,
    null,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ClauseElement, ColumnElement, Update

from relay.store import stream
from relay.store.compiled import ManyRows, Statement, any_of
from relay.store.schema import (
    DeliveryStatus,
    deliveries,
    delivery_attempts,
    events,
    status_is,
    webhook_routes,
)

S = DeliveryStatus


# The records of the delivery path are NamedTuples: immutable like a frozen dataclass, built
# in a third of the time (several per delivery, at tens of thousands of deliveries a second).
class Claimed(NamedTuple):
    seq: int
    route_id: str
    event_id: str
    attempts: int
    created_ms: int


class Outcome(NamedTuple):
    """What one attempt came to, as the worker hands it to :func:`finish`."""

    seq: int
    route_id: str
    attempt: int  # 1-based number of this attempt
    started_ms: int
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    result: str  # DeliveryStatus.DELIVERED | PENDING (retry later) | FAILED
    next_attempt_ms: int | None = None
    disable_route: str | None = None  # reason, when the receiver asked for it (410)


_RETURNING = (
    deliveries.c.seq,
    deliveries.c.route_id,
    deliveries.c.event_id,
    deliveries.c.attempts,
    deliveries.c.created_ms,
)


def _claim_statement(dialect: str) -> ClauseElement:
    due = (
        select(deliveries.c.seq)
        .join(webhook_routes, webhook_routes.c.id == deliveries.c.route_id)
        .where(
            status_is(S.PENDING),
            deliveries.c.lane == bindparam("lane"),
            deliveries.c.next_attempt_ms <= bindparam("now"),
            webhook_routes.c.enabled == 1,
            webhook_routes.c.ordering == "none",
            not_(any_of(deliveries.c.route_id, "skip", dialect)),
        )
        .order_by(deliveries.c.next_attempt_ms, deliveries.c.seq)
        .limit(bindparam("limit"))
    )
    if dialect == "postgresql":
        due = due.with_for_update(of=deliveries, skip_locked=True)
    return _taking(deliveries.c.seq.in_(due.scalar_subquery()))


def _taking(*where: ColumnElement[bool]) -> ClauseElement:
    """Lease the deliveries ``where`` selects to ``:node`` until ``:lease_until``."""
    return (
        update(deliveries)
        .where(*where)
        .values(
            status=S.INFLIGHT,
            lease_until_ms=bindparam("lease_until"),
            claimed_by=bindparam("node"),
            updated_ms=bindparam("now"),
        )
        .returning(*_RETURNING)
    )


_CLAIM = Statement(_claim_statement, lists=("skip",))


async def claim(
    conn: AsyncConnection,
    *,
    lane: int,
    now: int,
    limit: int,
    lease_until: int,
    node: str,
    skip_routes: Sequence[str] = (),
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of one lane on enabled unordered routes, apart
    from those of ``skip_routes`` (routes with no free slot on this node)."""
    if limit <= 0:
        return []
    rows = await _CLAIM.rows(
        conn,
        lane=lane,
        now=now,
        limit=limit,
        lease_until=lease_until,
        node=node,
        skip=sorted(skip_routes),
    )
    return sorted(map(_claimed_row, rows))


def _claimed_row(r: Sequence[Any]) -> Claimed:
    """A row of ``_RETURNING``'s columns, as the driver gives it (both drivers give these
    columns as ``int`` and ``str``)."""
    return Claimed._make(r)


async def claim_fifo_heads(
    conn: AsyncConnection, *, now: int, lease_until: int, node: str
) -> list[Claimed]:
    """Take the oldest unfinished delivery of each enabled fifo route, if due and not in flight."""
    heads = (
        select(func.min(deliveries.c.seq))
        .join(webhook_routes, webhook_routes.c.id == deliveries.c.route_id)
        .where(
            webhook_routes.c.ordering == "fifo",
            webhook_routes.c.enabled == 1,
            status_is(S.PENDING, S.INFLIGHT),
        )
        .group_by(deliveries.c.route_id)
    )
    due = select(deliveries.c.seq).where(
        deliveries.c.seq.in_(heads.scalar_subquery()),
        status_is(S.PENDING),
        deliveries.c.next_attempt_ms <= now,
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.seq.in_(due.scalar_subquery()))
        .values(status=S.INFLIGHT, lease_until_ms=lease_until, claimed_by=node, updated_ms=now)
        .returning(*_RETURNING)
    )
    return sorted(map(_claimed_row, result))


def new_delivery(now: ColumnElement[Any]) -> dict[str, ColumnElement[Any]]:
    """The values of a new delivery: lane 0, no attempt yet, due ``now``; the route, the
    event and the status are bound as ``route_id``, ``event_id`` and ``status``."""
    return {
        "route_id": bindparam("route_id"),
        "event_id": bindparam("event_id"),
        "status": bindparam("status"),
        "lane": literal_column("0"),
        "attempts": literal_column("0"),
        "next_attempt_ms": now,
        "created_ms": now,
        "updated_ms": now,
    }


# One delivery, queued (no lease, no node) or already taken (in flight under a lease).
_ADD_ONE = Statement(
    lambda _: (
        deliveries.insert()
        .values(
            **new_delivery(bindparam("now")),
            lease_until_ms=bindparam("lease_until"),
            claimed_by=bindparam("node"),
        )
        .returning(*_RETURNING)
    )
)


async def add_one(
    conn: AsyncConnection,
    *,
    route_id: str,
    event_id: str,
    now: int,
    taken: tuple[str, int] | None = None,
) -> Claimed:
    """Queue one delivery of ``event_id`` to ``route_id``, due now (a test delivery). With
    ``taken`` (node, lease until) it is in flight for that node from the start: the node
    attempts it itself once this transaction commits, with no claim of its own."""
    node, lease_until = taken if taken is not None else (None, None)
    rows = await _ADD_ONE.rows(
        conn,
        route_id=route_id,
        event_id=event_id,
        status=S.PENDING if taken is None else S.INFLIGHT,
        now=now,
        lease_until=lease_until,
        node=node,
    )
    return _claimed_row(rows[0])


class Stored(NamedTuple):
    """What an attempt sends of an event: its name and account (a queue sink's routing key
    and fields) and its payload, the exact bytes that are signed."""

    event: str
    account: str | None
    payload: str


_PAYLOADS = Statement(
    lambda dialect: select(events.c.id, events.c.event, events.c.account, events.c.payload).where(
        any_of(events.c.id, "ids", dialect)
    ),
    lists=("ids",),
)


async def payloads(conn: AsyncConnection, event_ids: Sequence[str]) -> dict[str, Stored]:
    rows = await _PAYLOADS.rows(conn, ids=sorted(set(event_ids)))
    return {r[0]: Stored(r[1], r[2], r[3]) for r in rows}


_ATTEMPT_COLUMNS = (
    "delivery_seq",
    "attempt",
    "started_ms",
    "duration_ms",
    "status_code",
    "error",
    "response_body",
)
_ATTEMPTS = ManyRows(
    {name: delivery_attempts.c[name].type for name in _ATTEMPT_COLUMNS},
    one=lambda: delivery_attempts.insert().values({c: bindparam(c) for c in _ATTEMPT_COLUMNS}),
    all=lambda v: delivery_attempts.insert().from_select(list(_ATTEMPT_COLUMNS), select(*v.c)),
)


def _settle(value: Callable[[str], ColumnElement[Any]]) -> Update:
    return update(deliveries).values(
        status=value("status"),
        attempts=value("attempts"),
        lane=literal_column("1"),
        next_attempt_ms=value("next"),
        lease_until_ms=null(),
        claimed_by=null(),
        last_status=value("code"),
        last_error=value("error"),
        updated_ms=value("now"),
        delivered_ms=value("delivered"),
    )


_SETTLED = ManyRows(
    {
        "status": deliveries.c.status.type,
        "attempts": deliveries.c.attempts.type,
        "next": deliveries.c.next_attempt_ms.type,
        "code": deliveries.c.last_status.type,
        "error": deliveries.c.last_error.type,
        "now": deliveries.c.updated_ms.type,
        "delivered": deliveries.c.delivered_ms.type,
        "seq": deliveries.c.seq.type,
    },
    one=lambda: _settle(bindparam).where(deliveries.c.seq == bindparam("seq")),
    all=lambda v: _settle(lambda name: v.c[name]).where(deliveries.c.seq == v.c.seq),
)

# A route that delivered again is no longer failing; a cheap no-op when it was not.
_ROUTES_RECOVERED = Statement(
    lambda dialect: (
        update(webhook_routes)
        .where(
            any_of(webhook_routes.c.id, "ids", dialect),
            webhook_routes.c.failing_since_ms.is_not(None),
        )
        .values(failing_since_ms=None)
    ),
    lists=("ids",),
)


async def finish(
    conn: AsyncConnection, outcomes: Sequence[Outcome], *, now: int, disable_after_ms: int
) -> None:
    """Record a batch of attempt outcomes and their effect on routes."""
    if not outcomes:
        return
    attempts = [
        (o.seq, o.attempt, o.started_ms, o.duration_ms, o.status_code, o.error, o.response_body)
        for o in outcomes
    ]
    delivered = S.DELIVERED
    settled = [
        (
            o.result,
            o.attempt,
            o.next_attempt_ms if o.next_attempt_ms is not None else now,
            o.status_code,
            o.error,
            now,
            now if o.result == delivered else None,
            o.seq,
        )
        for o in outcomes
    ]
    await _ATTEMPTS.run(conn, attempts)
    await _SETTLED.run(conn, settled)
    ok = {o.route_id for o in outcomes if o.result == S.DELIVERED}
    bad = {o.route_id for o in outcomes if o.result != S.DELIVERED} - ok
    if ok:
        await _ROUTES_RECOVERED.run(conn, ids=sorted(ok))
    if bad:
        await conn.execute(
            update(webhook_routes)
            .where(webhook_routes.c.id.in_(bad), webhook_routes.c.failing_since_ms.is_(None))
            .values(failing_since_ms=now)
        )
        await conn.execute(
            update(webhook_routes)
            .where(
                webhook_routes.c.id.in_(bad),
                webhook_routes.c.enabled == 1,
                webhook_routes.c.failing_since_ms <= now - disable_after_ms,
            )
            .values(
                enabled=0,
                disabled_reason="every delivery failed for longer than webhooks.disable_after_days",
                updated_ms=now,
            )
        )
    for o in outcomes:
        if o.disable_route:
            await conn.execute(
                update(webhook_routes)
                .where(webhook_routes.c.id == o.route_id)
                .values(enabled=0, disabled_reason=o.disable_route, updated_ms=now)
            )


async def reap(conn: AsyncConnection, *, now: int) -> int:
    """Give back deliveries whose lease ran out (their node died or stalled)."""
    result = await conn.execute(
        update(deliveries)
        .where(status_is(S.INFLIGHT), deliveries.c.lease_until_ms < now)
        .values(status=S.PENDING, lease_until_ms=None, claimed_by=None, updated_ms=now)
    )
    return int(result.rowcount or 0)


async def release(conn: AsyncConnection, seqs: Sequence[int], *, node: str, now: int) -> None:
    """Give back claimed deliveries this node will not attempt (shutdown)."""
    if not seqs:
        return
    await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.seq.in_(seqs),
            deliveries.c.status == S.INFLIGHT,
            deliveries.c.claimed_by == node,
        )
        .values(status=S.PENDING, lease_until_ms=None, claimed_by=None, updated_ms=now)
    )


async def requeue(conn: AsyncConnection, seq: int, *, now: int) -> bool:
    """Manual retry: queue one delivery again now, whatever its state (unless in flight)."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.seq == seq, deliveries.c.status != S.INFLIGHT)
        .values(status=S.PENDING, next_attempt_ms=now, lane=1, updated_ms=now, delivered_ms=None)
    )
    return bool(result.rowcount)


async def recover(
    conn: AsyncConnection, route_id: str, *, since_ms: int, until_ms: int | None = None, now: int
) -> int:
    """Queue a route's failed deliveries created since ``since_ms`` (and before ``until_ms``)
    again, with a fresh schedule."""
    window = [deliveries.c.created_ms >= since_ms]
    if until_ms is not None:
        window.append(deliveries.c.created_ms < until_ms)
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.route_id == route_id,
            status_is(S.FAILED),
            *window,
        )
        .values(status=S.PENDING, attempts=0, lane=1, next_attempt_ms=now, updated_ms=now)
    )
    return int(result.rowcount or 0)


async def prune(conn: AsyncConnection, *, before_ms: int) -> int:
    """Delete finished deliveries (and events nobody waits for) older than ``before_ms``;
    the event stream's watermark records what went (:mod:`relay.store.stream`)."""
    result = await conn.execute(
        deliveries.delete().where(
            deliveries.c.status.in_((S.DELIVERED, S.FAILED)), deliveries.c.updated_ms < before_ms
        )
    )
    waiting = select(deliveries.c.event_id).where(deliveries.c.event_id == events.c.id).exists()
    # Only events the stream has placed: one still without a position has not been offered
    # to stream readers yet.
    old = (events.c.created_ms < before_ms, events.c.pos.is_not(None), ~waiting)
    # The stream's watermark goes up to the highest position deleted, read before the delete:
    # a row that stops qualifying meanwhile can only make it higher than needed (a 410 for a
    # cursor that could have gone on), never lower (a gap).
    top = await conn.scalar(select(func.max(events.c.pos)).where(*old))
    await conn.execute(events.delete().where(*old))
    if top is not None:
        await stream.pruned(conn, int(top))
    return int(result.rowcount or 0)


async def depth(conn: AsyncConnection) -> dict[str, int]:
    """Deliveries by status (queue depth for metrics): the queue's states counted in their
    partial indexes, the delivered ones as the rest of the table."""
    counts = await states(conn, (S.PENDING, S.INFLIGHT, S.FAILED))
    total = int(await conn.scalar(select(func.count()).select_from(deliveries)) or 0)
    counts[S.DELIVERED] = total - sum(counts.values())
    return counts


async def states(conn: AsyncConnection, wanted: Sequence[str]) -> dict[str, int]:
    """How many deliveries are in each of the ``wanted`` states (each in one of the partial
    indexes, so that counting reads the queue, not the history)."""
    counts = [
        select(func.count()).select_from(deliveries).where(status_is(state)).scalar_subquery()
        for state in wanted
    ]
    row = (await conn.execute(select(*counts))).one()
    return {state: int(n) for state, n in zip(wanted, row, strict=True)}


async def page(
    conn: AsyncConnection, route_id: str, *, status: str | None, offset: int, limit: int
) -> tuple[int, Sequence[RowMapping], dict[int, list[RowMapping]]]:
    """A route's deliveries, newest first, with every attempt of each."""
    where = [deliveries.c.route_id == route_id]
    if status:
        where.append(deliveries.c.status == status)
    total = int(await conn.scalar(select(func.count()).select_from(deliveries).where(*where)) or 0)
    rows = (
        (
            await conn.execute(
                select(deliveries, events.c.event, events.c.account)
                .join(events, events.c.id == deliveries.c.event_id)
                .where(*where)
                .order_by(deliveries.c.seq.desc())
                .offset(offset)
                .limit(limit)
            )
        )
        .mappings()
        .all()
    )
    attempts: dict[int, list[RowMapping]] = {int(r["seq"]): [] for r in rows}
    if attempts:
        found = await conn.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.delivery_seq.in_(list(attempts)))
            .order_by(delivery_attempts.c.seq)
        )
        for a in found.mappings():
            attempts[int(a["delivery_seq"])].append(a)
    return total, rows, attempts


def _latest_outcome() -> Select[tuple[int, str, int | None, int | None, str | None]]:
    others = delivery_attempts.alias("others")
    latest = (
        select(func.max(others.c.seq))
        .where(others.c.delivery_seq == deliveries.c.seq)
        .scalar_subquery()
    )
    return (
        select(
            deliveries.c.seq,
            deliveries.c.status,
            delivery_attempts.c.seq.label("attempt_seq"),
            delivery_attempts.c.status_code,
            delivery_attempts.c.error,
        )
        .select_from(deliveries.outerjoin(delivery_attempts, delivery_attempts.c.seq == latest))
        .where(
            deliveries.c.route_id == bindparam("route_id"),
            deliveries.c.event_id == bindparam("event_id"),
        )
        # Newest first along the (route_id, seq) index: a recent event's delivery is found
        # after a few rows, not after every delivery the route ever had.
        .order_by(deliveries.c.seq.desc())
        .limit(1)
    )


# Built once: it is read once per test delivery, and building it costs more than running it.
_LATEST_OUTCOME = _latest_outcome()


async def latest_outcome(conn: AsyncConnection, route_id: str, event_id: str) -> RowMapping | None:
    """The delivery of one recent event to one route: its ``seq`` and ``status``, with its
    latest attempt's ``status_code`` and ``error`` (None before the first attempt); None when
    there is no such delivery (any more).

    One statement, so the status and the attempt agree on every engine.
    """
    result = await conn.execute(_LATEST_OUTCOME, {"route_id": route_id, "event_id": event_id})
    return result.mappings().first()


async def get(conn: AsyncConnection, seq: int) -> RowMapping | None:
    result = await conn.execute(select(deliveries).where(deliveries.c.seq == seq))
    return result.mappings().first()
