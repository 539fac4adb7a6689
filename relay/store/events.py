"""Queries on ``events`` and the fan-out to ``deliveries``.

:func:`record` is the one way an event enters the system: the event row and one delivery
row per matching enabled-or-disabled route are written in the caller's transaction, so an
event is either stored with all its deliveries or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.events.fit import fit_payload
from relay.events.model import Event
from relay.store import settings as settings_store
from relay.store.engine import now_ms
from relay.store.schema import DeliveryStatus, deliveries, events, webhook_routes
from relay.webhooks.routing import route_matches

DEFAULT_MAX_BYTES = 256 * 1024


async def service_url(conn: AsyncConnection, default: str) -> str:
    """The ``serviceUrl`` of envelopes: the API setting when one is stored, else the config."""
    stored = await settings_store.get(conn, "serviceUrl")
    return str(stored).rstrip("/") if stored else default


async def record(
    conn: AsyncConnection,
    batch: Sequence[Event],
    *,
    default_service_url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    only_route: str | None = None,
) -> list[str]:
    """Store ``batch`` and queue a delivery for every route that wants each event.

    ``only_route`` sends the events to that one route only (test deliveries).
    """
    if not batch:
        return []
    base = await service_url(conn, default_service_url)
    ms = now_ms()
    await conn.execute(
        events.insert(),
        [
            {
                "id": e.id,
                "account": e.account,
                "event": e.event,
                "created_ms": e.created_ms,
                "payload": fit_payload(e.envelope(base), max_bytes),
            }
            for e in batch
        ],
    )
    routes = (
        await conn.execute(
            select(webhook_routes.c.id, webhook_routes.c.events, webhook_routes.c.accounts)
        )
    ).all()
    rows = []
    for e in batch:
        for route_id, route_events, route_accounts in routes:
            wanted = (
                route_id == only_route
                if only_route is not None
                else route_matches(route_events, route_accounts, e.event, e.account)
            )
            if wanted:
                rows.append(
                    {
                        "route_id": route_id,
                        "event_id": e.id,
                        "status": DeliveryStatus.PENDING,
                        "lane": 0,
                        "attempts": 0,
                        "next_attempt_ms": ms,
                        "created_ms": ms,
                        "updated_ms": ms,
                    }
                )
    if rows:
        await conn.execute(deliveries.insert(), rows)
    return [e.id for e in batch]


async def append(conn: AsyncConnection, event: Event, service_url: str) -> str:
    """Store one event (with its deliveries) inside the caller's transaction."""
    (event_id,) = await record(conn, [event], default_service_url=service_url)
    return event_id


async def for_account(conn: AsyncConnection, account: str) -> Sequence[RowMapping]:
    rows = await conn.execute(
        select(events).where(events.c.account == account).order_by(events.c.seq)
    )
    return rows.mappings().all()
