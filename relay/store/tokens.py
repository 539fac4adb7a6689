"""Queries on ``api_tokens``."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.api_tokens import hash_token, new_id
from relay.store.engine import now_ms
from relay.store.schema import api_tokens


async def add(conn: AsyncConnection, token: str, *, source: str, description: str = "") -> str:
    """Store ``token`` (hashed); return its id. Adding a known token is a no-op."""
    digest = hash_token(token)
    existing = await conn.scalar(select(api_tokens.c.id).where(api_tokens.c.token_hash == digest))
    if existing is not None:
        return str(existing)
    token_id = new_id()
    await conn.execute(
        api_tokens.insert().values(
            id=token_id,
            token_hash=digest,
            description=description,
            source=source,
            created_ms=now_ms(),
        )
    )
    return token_id


async def exists(conn: AsyncConnection, token: str) -> bool:
    row = await conn.scalar(
        select(api_tokens.c.id).where(api_tokens.c.token_hash == hash_token(token))
    )
    return row is not None


async def count(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.count()).select_from(api_tokens)) or 0)
