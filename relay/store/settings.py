"""Queries on ``settings``: EmailEngine-style global settings stored as JSON values."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store import dialect
from relay.store.engine import now_ms
from relay.store.schema import settings


async def get(conn: AsyncConnection, key: str) -> Any:
    return await conn.scalar(select(settings.c.value).where(settings.c.key == key))


async def get_all(conn: AsyncConnection) -> dict[str, Any]:
    rows = await conn.execute(select(settings.c.key, settings.c.value))
    return {str(k): v for k, v in rows.all()}


async def put(conn: AsyncConnection, key: str, value: Any) -> None:
    """Store ``value`` under ``key``. One upsert, not an update then an insert: a node that
    makes a value on first use (:func:`put_new`) may insert the key between the two."""
    values = {"value": value, "updated_ms": now_ms()}
    await conn.execute(
        dialect.insert(conn, settings)
        .values(key=key, **values)
        .on_conflict_do_update(index_elements=[settings.c.key], set_=values)
    )


async def put_new(conn: AsyncConnection, key: str, value: Any) -> Any:
    """Store ``value`` unless ``key`` has one; return the stored value (this one, or the one
    another node stored first: nodes starting together agree on one)."""
    await conn.execute(
        dialect.insert(conn, settings)
        .values(key=key, value=value, updated_ms=now_ms())
        .on_conflict_do_nothing()
    )
    return await conn.scalar(select(settings.c.value).where(settings.c.key == key))


async def delete(conn: AsyncConnection, key: str) -> None:
    await conn.execute(settings.delete().where(settings.c.key == key))
