"""Queries on ``oauth2_apps``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.engine import now_ms
from relay.store.schema import accounts, oauth2_apps


async def insert(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    ms = now_ms()
    await conn.execute(oauth2_apps.insert().values(**values, created_ms=ms, updated_ms=ms))


async def update(conn: AsyncConnection, app_id: str, values: Mapping[str, Any]) -> None:
    await conn.execute(
        oauth2_apps.update().where(oauth2_apps.c.id == app_id).values(**values, updated_ms=now_ms())
    )


async def get(conn: AsyncConnection, app_id: str) -> RowMapping | None:
    result = await conn.execute(select(oauth2_apps).where(oauth2_apps.c.id == app_id))
    return result.mappings().first()


async def page(conn: AsyncConnection, offset: int, limit: int) -> tuple[int, Sequence[RowMapping]]:
    total = int(await conn.scalar(select(func.count()).select_from(oauth2_apps)) or 0)
    rows = await conn.execute(
        select(oauth2_apps)
        .order_by(oauth2_apps.c.created_ms, oauth2_apps.c.id)
        .offset(offset)
        .limit(limit)
    )
    return total, rows.mappings().all()


async def users_of(conn: AsyncConnection, app_id: str) -> list[str]:
    """Accounts that use the app directly."""
    rows = await conn.execute(
        select(accounts.c.id).where(accounts.c.oauth2_app == app_id).order_by(accounts.c.id)
    )
    return [str(r) for r in rows.scalars()]


async def delete(conn: AsyncConnection, app_id: str) -> None:
    await conn.execute(oauth2_apps.delete().where(oauth2_apps.c.id == app_id))
