"""Queries on ``admin_sessions``: the admin UI's signed-in browsers (keys stored hashed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.schema import admin_sessions

__all__ = ["add", "drop", "drop_subject", "find", "prune", "touch"]


async def add(
    conn: AsyncConnection,
    *,
    key_hash: str,
    subject: str,
    token_hash: str | None,
    csrf: str,
    now_ms: int,
) -> None:
    await conn.execute(
        insert(admin_sessions).values(
            key_hash=key_hash,
            subject=subject,
            token_hash=token_hash,
            csrf=csrf,
            created_ms=now_ms,
            seen_ms=now_ms,
        )
    )


async def find(conn: AsyncConnection, key_hash: str) -> RowMapping | None:
    """The session whose key hashes to ``key_hash``; None for an unknown one."""
    result = await conn.execute(select(admin_sessions).where(admin_sessions.c.key_hash == key_hash))
    return result.mappings().first()


async def touch(conn: AsyncConnection, key_hash: str, now_ms: int) -> None:
    """Record that the session was used now (its idle time starts again)."""
    await conn.execute(
        update(admin_sessions).where(admin_sessions.c.key_hash == key_hash).values(seen_ms=now_ms)
    )


async def drop(conn: AsyncConnection, key_hash: str) -> None:
    await conn.execute(delete(admin_sessions).where(admin_sessions.c.key_hash == key_hash))


async def prune(conn: AsyncConnection, seen_before_ms: int) -> int:
    """Delete the sessions idle since before ``seen_before_ms``; return how many."""
    result: Any = await conn.execute(
        delete(admin_sessions).where(admin_sessions.c.seen_ms < seen_before_ms)
    )
    return int(result.rowcount or 0)


async def drop_subject(conn: AsyncConnection, subject: str) -> None:
    """End every session of ``subject`` (the admin password changed)."""
    await conn.execute(delete(admin_sessions).where(admin_sessions.c.subject == subject))
