"""Counts for the admin dashboard: accounts by state, activity per minute, queue depths and
failing routes. Read-only, each one aggregate query."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.deliveries import states as delivery_states
from relay.store.schema import (
    DeliveryStatus,
    OutboxStatus,
    accounts,
    deliveries,
    events,
    outbox,
    status_is,
    webhook_routes,
)

__all__ = ["FailingRoute", "accounts_by_state", "failing_routes", "per_minute", "queue_depths"]

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class FailingRoute:
    id: str
    url: str
    enabled: bool
    disabled_reason: str | None
    failing_since_ms: int | None
    failed: int


async def accounts_by_state(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(accounts.c.state, func.count()).group_by(accounts.c.state))
    return {str(state): int(n) for state, n in rows.all()}


async def per_minute(conn: AsyncConnection, since_ms: int) -> tuple[dict[int, int], dict[int, int]]:
    """Events stored and deliveries made per minute since ``since_ms``, keyed by the minute
    (epoch ms // 60000)."""
    # Modulo, not division: integer division and floor() differ between the engines.
    minute = events.c.created_ms - events.c.created_ms % MINUTE_MS
    rows = await conn.execute(
        select(minute, func.count()).where(events.c.created_ms >= since_ms).group_by(minute)
    )
    made = {int(m) // MINUTE_MS: int(n) for m, n in rows.all()}
    done = deliveries.c.delivered_ms - deliveries.c.delivered_ms % MINUTE_MS
    rows = await conn.execute(
        select(done, func.count()).where(deliveries.c.delivered_ms >= since_ms).group_by(done)
    )
    delivered = {int(m) // MINUTE_MS: int(n) for m, n in rows.all()}
    return made, delivered


async def queue_depths(conn: AsyncConnection) -> dict[str, int]:
    """Deliveries waiting or in flight, failed ones, and messages waiting to be sent."""
    by_status = await delivery_states(
        conn, (DeliveryStatus.PENDING, DeliveryStatus.INFLIGHT, DeliveryStatus.FAILED)
    )
    rows = await conn.execute(
        select(outbox.c.status, func.count())
        .where(
            outbox.c.status.in_((OutboxStatus.QUEUED, OutboxStatus.SENDING, OutboxStatus.FAILED))
        )
        .group_by(outbox.c.status)
    )
    sends = {str(s): int(n) for s, n in rows.all()}
    return {
        "deliveriesPending": by_status.get(DeliveryStatus.PENDING, 0)
        + by_status.get(DeliveryStatus.INFLIGHT, 0),
        "deliveriesFailed": by_status.get(DeliveryStatus.FAILED, 0),
        "outboxQueued": sends.get(OutboxStatus.QUEUED, 0) + sends.get(OutboxStatus.SENDING, 0),
        "outboxFailed": sends.get(OutboxStatus.FAILED, 0),
    }


async def failing_routes(conn: AsyncConnection, limit: int = 20) -> list[FailingRoute]:
    """Routes that are failing now (or disabled by a receiver), with their failed deliveries."""
    failed = (
        select(deliveries.c.route_id, func.count().label("failed"))
        .where(status_is(DeliveryStatus.FAILED))
        .group_by(deliveries.c.route_id)
        .subquery()
    )
    rows = await conn.execute(
        select(
            webhook_routes.c.id,
            webhook_routes.c.url,
            webhook_routes.c.enabled,
            webhook_routes.c.disabled_reason,
            webhook_routes.c.failing_since_ms,
            func.coalesce(failed.c.failed, 0),
        )
        .select_from(webhook_routes.outerjoin(failed, failed.c.route_id == webhook_routes.c.id))
        .where(
            webhook_routes.c.failing_since_ms.is_not(None)
            | webhook_routes.c.disabled_reason.is_not(None)
            | and_(failed.c.failed.is_not(None), failed.c.failed > 0)
        )
        .order_by(webhook_routes.c.id)
        .limit(limit)
    )
    return [
        FailingRoute(
            id=str(r[0]),
            url=str(r[1]),
            enabled=bool(r[2]),
            disabled_reason=r[3],
            failing_since_ms=r[4],
            failed=int(r[5]),
        )
        for r in rows.all()
    ]
