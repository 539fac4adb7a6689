"""Queries on ``oauth2_flows`` and ``oauth2_tokens``, and on the OAuth2 part of ``accounts``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.auth.delegation import MAX_HOPS
from relay.store.engine import now_ms
from relay.store.schema import accounts, oauth2_flows, oauth2_tokens

# -- sign-in flows --------------------------------------------------------------------------


async def put_flow(
    conn: AsyncConnection,
    state: str,
    app: str,
    flow: bytes,
    request: dict[str, Any],
    expires_ms: int,
) -> None:
    """Keep a started sign-in until the redirect back; forget the ones that expired."""
    ms = now_ms()
    await conn.execute(oauth2_flows.delete().where(oauth2_flows.c.expires_ms <= ms))
    await conn.execute(
        oauth2_flows.insert().values(
            state=state,
            app=app,
            flow=flow,
            request=request,
            expires_ms=expires_ms,
            created_ms=ms,
        )
    )


async def take_flow(conn: AsyncConnection, state: str) -> RowMapping | None:
    """Remove and return the flow named ``state``; None if unknown or already taken.

    Each flow is taken once, so a replayed redirect finds nothing (even on another node).
    """
    row = (
        (await conn.execute(select(oauth2_flows).where(oauth2_flows.c.state == state)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    deleted = await conn.execute(oauth2_flows.delete().where(oauth2_flows.c.state == state))
    return row if deleted.rowcount == 1 else None


# -- access tokens --------------------------------------------------------------------------


async def get_token(conn: AsyncConnection, account: str, resource: str) -> RowMapping | None:
    result = await conn.execute(
        select(oauth2_tokens).where(
            oauth2_tokens.c.account == account, oauth2_tokens.c.resource == resource
        )
    )
    return result.mappings().first()


async def put_token(
    conn: AsyncConnection,
    account: str,
    resource: str,
    *,
    access_token: bytes,
    scopes: Sequence[str],
    expires_ms: int,
    account_updated_ms: int,
) -> None:
    """Store (or replace) the access token of ``account`` for ``resource``."""
    await conn.execute(
        oauth2_tokens.delete().where(
            oauth2_tokens.c.account == account, oauth2_tokens.c.resource == resource
        )
    )
    await conn.execute(
        oauth2_tokens.insert().values(
            account=account,
            resource=resource,
            access_token=access_token,
            scopes=list(scopes),
            expires_ms=expires_ms,
            account_updated_ms=account_updated_ms,
            updated_ms=now_ms(),
        )
    )


async def forget_tokens(conn: AsyncConnection, account: str) -> None:
    """Drop every cached access token of ``account``."""
    await conn.execute(oauth2_tokens.delete().where(oauth2_tokens.c.account == account))


# -- accounts -------------------------------------------------------------------------------


async def set_secrets(conn: AsyncConnection, account: str, secrets: bytes | None) -> None:
    """Replace the encrypted secrets of an account (a rotated refresh token).

    Leaves ``updated_ms`` alone: a refresh is not a settings change, and the IMAP
    supervisor restarts an account's listeners when that column moves.
    """
    await conn.execute(accounts.update().where(accounts.c.id == account).values(secrets=secrets))


async def dependents_of(conn: AsyncConnection, root: str) -> list[str]:
    """Every account that uses ``root``'s tokens, directly or through other shared accounts."""
    found: list[str] = []
    frontier = [root]
    for _ in range(MAX_HOPS + 1):
        if not frontier:
            break
        rows = await conn.execute(
            select(accounts.c.id)
            .where(accounts.c.delegated_account.in_(frontier))
            .order_by(accounts.c.id)
        )
        frontier = [str(r) for r in rows.scalars() if r != root and r not in found]
        found.extend(frontier)
    return found
