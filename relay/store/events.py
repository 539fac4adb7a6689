"""Queries on ``events``: the durable record of everything that happened."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.events.model import Event
from relay.store.schema import events


async def append(conn: AsyncConnection, event: Event, service_url: str) -> str:
    """Store ``event`` inside the caller's transaction; return its id."""
    await conn.execute(
        events.insert().values(
            id=event.id,
            account=event.account,
            event=event.event,
            created_ms=event.created_ms,
            payload=event.payload(service_url),
        )
    )
    return event.id


async def for_account(conn: AsyncConnection, account: str) -> Sequence[RowMapping]:
    rows = await conn.execute(
        select(events).where(events.c.account == account).order_by(events.c.seq)
    )
    return rows.mappings().all()
