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
    ms = now_ms()
    changed = await conn.execute(
        settings.update().where(settings.c.key == key).values(value=value, updated_ms=ms)
    )
    if changed.rowcount == 0:
        await conn.execute(settings.insert().values(key=key, value=value, updated_ms=ms))


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
