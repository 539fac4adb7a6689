"""Queries on ``webhook_routes``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.compiled import Statement
from relay.store.engine import now_ms
from relay.store.schema import webhook_routes


async def insert(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    ms = now_ms()
    await conn.execute(webhook_routes.insert().values(**values, created_ms=ms, updated_ms=ms))


async def update(conn: AsyncConnection, route_id: str, values: Mapping[str, Any]) -> None:
    await conn.execute(
        webhook_routes.update()
        .where(webhook_routes.c.id == route_id)
        .values(**values, updated_ms=now_ms())
    )


async def get(conn: AsyncConnection, route_id: str) -> RowMapping | None:
    result = await conn.execute(select(webhook_routes).where(webhook_routes.c.id == route_id))
    return result.mappings().first()


# FOR KEY SHARE (PostgreSQL; SQLite's write transaction excludes other writers anyway): the
# route cannot be deleted before the transaction that read it commits, so a delivery it
# queues for the route meets no missing route.
_ENABLED = Statement(
    lambda _: (
        select(webhook_routes.c.enabled)
        .where(webhook_routes.c.id == bindparam("id"))
        .with_for_update(read=True, key_share=True)
    )
)


async def enabled(conn: AsyncConnection, route_id: str) -> bool | None:
    """Whether the route is enabled; None when there is no such route. Kept until the
    transaction ends (see ``_ENABLED``). A compiled statement (relay.store.compiled): test
    deliveries read it inside their write, where a statement through SQLAlchemy would hold
    the shared transaction over a hand-over to SQLite's thread."""
    rows = await _ENABLED.rows(conn, id=route_id)
    return bool(rows[0][0]) if rows else None


async def all_routes(conn: AsyncConnection) -> Sequence[RowMapping]:
    return (await conn.execute(select(webhook_routes))).mappings().all()


async def page(conn: AsyncConnection, offset: int, limit: int) -> tuple[int, Sequence[RowMapping]]:
    total = int(await conn.scalar(select(func.count()).select_from(webhook_routes)) or 0)
    rows = await conn.execute(
        select(webhook_routes)
        .order_by(webhook_routes.c.created_ms, webhook_routes.c.id)
        .offset(offset)
        .limit(limit)
    )
    return total, rows.mappings().all()


async def delete(conn: AsyncConnection, route_id: str) -> bool:
    result = await conn.execute(webhook_routes.delete().where(webhook_routes.c.id == route_id))
    return bool(result.rowcount)
