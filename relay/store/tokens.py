"""Queries on ``api_tokens``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.api_tokens import hash_token, new_id
from relay.auth.grants import SCOPES, Grant, Restrictions, permissions_from
from relay.store import dialect
from relay.store.engine import now_ms
from relay.store.schema import api_tokens, token_log


async def add(conn: AsyncConnection, token: str, *, source: str, description: str = "") -> str:
    """Store ``token`` (hashed); return its id. Adding a known token is a no-op."""
    digest = hash_token(token)
    existing = await conn.scalar(select(api_tokens.c.id).where(api_tokens.c.token_hash == digest))
    if existing is not None:
        return str(existing)
    # Nodes starting together with the same configured token: one row, whoever inserts first.
    await conn.execute(
        dialect.insert(conn, api_tokens)
        .values(
            id=new_id(),
            token_hash=digest,
            description=description,
            source=source,
            created_ms=now_ms(),
        )
        .on_conflict_do_nothing(index_elements=[api_tokens.c.token_hash])
    )
    return str(await conn.scalar(select(api_tokens.c.id).where(api_tokens.c.token_hash == digest)))


async def exists(conn: AsyncConnection, token: str) -> bool:
    row = await conn.scalar(
        select(api_tokens.c.id).where(api_tokens.c.token_hash == hash_token(token))
    )
    return row is not None


async def count(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.count()).select_from(api_tokens)) or 0)


def grant_of(row: Mapping[Any, Any]) -> Grant:
    """The grant an ``api_tokens`` row holds."""
    scopes = row["scopes"]
    return Grant(
        token_id=str(row["id"]),
        account=row["account"],
        shared=bool(row["shared"]),
        scopes=frozenset(scopes) if scopes is not None else frozenset(SCOPES),
        permissions=permissions_from(row["permissions"]),
        restrictions=Restrictions.from_json(row["restrictions"]),
        expires_ms=row["expires_ms"],
    )


async def find(conn: AsyncConnection, digest: str) -> Grant | None:
    """The grant of the token whose hash is ``digest``; None for an unknown token."""
    row = (
        (await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest)))
        .mappings()
        .first()
    )
    return grant_of(row) if row is not None else None


async def create(
    conn: AsyncConnection,
    token: str,
    grant: Grant,
    *,
    description: str,
    source: str,
    metadata: Mapping[str, Any] | None = None,
    parent_id: str | None = None,
) -> None:
    """Store ``token`` (hashed) with ``grant``; its id is ``grant.token_id``."""
    await conn.execute(
        api_tokens.insert().values(
            id=grant.token_id,
            token_hash=hash_token(token),
            description=description,
            source=source,
            created_ms=now_ms(),
            account=grant.account,
            shared=grant.shared,
            scopes=sorted(grant.scopes),
            permissions=grant.permissions_json(),
            restrictions=grant.restrictions.to_json(),
            expires_ms=grant.expires_ms,
            metadata=dict(metadata) if metadata is not None else None,
            parent_id=parent_id,
        )
    )


async def page(
    conn: AsyncConnection, offset: int, limit: int, *, account: str | None = None
) -> tuple[int, Sequence[RowMapping]]:
    """Tokens (oldest first), only those bound to ``account`` when it is given."""
    where = [api_tokens.c.account == account] if account is not None else []
    total = int(await conn.scalar(select(func.count()).select_from(api_tokens).where(*where)) or 0)
    rows = await conn.execute(
        select(api_tokens)
        .where(*where)
        .order_by(api_tokens.c.created_ms, api_tokens.c.id)
        .offset(offset)
        .limit(limit)
    )
    return total, rows.mappings().all()


async def get(conn: AsyncConnection, token_id: str) -> RowMapping | None:
    """The row of the token with this id."""
    result = await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id))
    return result.mappings().first()


async def get_by_hash(conn: AsyncConnection, digest: str) -> RowMapping | None:
    """The row of the token whose hash is ``digest``."""
    result = await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest))
    return result.mappings().first()


async def delete(conn: AsyncConnection, token_id: str) -> bool:
    """Delete the token; False if it was unknown."""
    result = await conn.execute(api_tokens.delete().where(api_tokens.c.id == token_id))
    return bool(result.rowcount)


async def ids_of_account(conn: AsyncConnection, account: str) -> list[str]:
    """Ids of the tokens bound to ``account`` (deleted with it)."""
    rows = await conn.execute(select(api_tokens.c.id).where(api_tokens.c.account == account))
    return [str(i) for i in rows.scalars()]


async def log_page(
    conn: AsyncConnection, token_id: str, offset: int, limit: int
) -> tuple[int, Sequence[RowMapping]]:
    """The token's audit log, newest first."""
    where = token_log.c.token_id == token_id
    total = int(await conn.scalar(select(func.count()).select_from(token_log).where(where)) or 0)
    rows = await conn.execute(
        select(token_log).where(where).order_by(token_log.c.seq.desc()).offset(offset).limit(limit)
    )
    return total, rows.mappings().all()
