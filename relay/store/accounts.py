"""Queries on ``accounts``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from relay.auth.delegation import MAX_HOPS
from relay.auth.grants import Grant
from relay.store import dialect
from relay.store.engine import now_ms
from relay.store.schema import accounts

# Accounts per IN list: far below both engines' parameter limits.
_CHUNK = 500


async def get(conn: AsyncConnection, account: str) -> RowMapping | None:
    result = await conn.execute(select(accounts).where(accounts.c.id == account))
    return result.mappings().first()


async def rows(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, RowMapping]:
    """The rows of the accounts ``ids`` that exist, by id (a few reads however many)."""
    wanted = sorted(set(ids))
    found: dict[str, RowMapping] = {}
    for start in range(0, len(wanted), _CHUNK):
        result = await conn.execute(
            select(accounts).where(accounts.c.id.in_(wanted[start : start + _CHUNK]))
        )
        found.update((str(r["id"]), r) for r in result.mappings())
    return found


async def insert(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    ms = now_ms()
    await conn.execute(accounts.insert().values(**values, created_ms=ms, updated_ms=ms))


async def insert_new(conn: AsyncConnection, values: Mapping[str, Any]) -> bool:
    """Insert an account unless one with its id exists; whether it was inserted (one
    statement: no read first, and two racing inserts of one id cannot both fail or win)."""
    ms = now_ms()
    result = await conn.execute(
        dialect.insert(conn, accounts)
        .values(**values, created_ms=ms, updated_ms=ms)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(accounts.c.id)
    )
    return result.first() is not None


async def update(conn: AsyncConnection, account: str, values: Mapping[str, Any]) -> None:
    await conn.execute(
        accounts.update().where(accounts.c.id == account).values(**values, updated_ms=now_ms())
    )


async def delete(conn: AsyncConnection, account: str) -> None:
    await conn.execute(accounts.delete().where(accounts.c.id == account))


async def page(
    conn: AsyncConnection,
    offset: int,
    limit: int,
    *,
    state: str | None,
    query: str | None,
    only: Sequence[str] | None = None,
) -> tuple[int, Sequence[RowMapping]]:
    """A page of accounts by id; ``only``: among these ids (an account-bound token's)."""
    where: list[ColumnElement[bool]] = []
    if only is not None:
        where.append(accounts.c.id.in_(only))
    if state:
        where.append(accounts.c.state == state)
    if query:
        pattern = f"%{query.lower()}%"
        where.append(
            func.lower(accounts.c.id).like(pattern)
            | func.lower(accounts.c.name).like(pattern)
            | func.lower(accounts.c.email).like(pattern)
        )
    total = int(await conn.scalar(select(func.count()).select_from(accounts).where(*where)) or 0)
    rows = await conn.execute(
        select(accounts).where(*where).order_by(accounts.c.id).offset(offset).limit(limit)
    )
    return total, rows.mappings().all()


async def delegation_chain(conn: AsyncConnection, start: str) -> list[str]:
    """``start`` and the accounts it delegates to, stopping at a root, a repeat or too many hops."""
    chain = [start]
    current = start
    while len(chain) <= MAX_HOPS:
        parent = await conn.scalar(
            select(accounts.c.delegated_account).where(accounts.c.id == current)
        )
        if parent is None:
            break
        chain.append(str(parent))
        if parent in chain[:-1]:
            break
        current = str(parent)
    return chain


async def delegated_to(conn: AsyncConnection, account: str) -> str | None:
    """The account whose credentials ``account`` borrows (a shared mailbox's main account)."""
    parent = await conn.scalar(select(accounts.c.delegated_account).where(accounts.c.id == account))
    return str(parent) if parent is not None else None


async def visible_to(conn: AsyncConnection, grant: Grant) -> list[str] | None:
    """The accounts an account-bound token may use (its own and, when it says ``shared``,
    those delegated from it); None for a token bound to no account."""
    if grant.account is None:
        return None
    if not grant.shared:
        return [grant.account]
    return [grant.account, *await dependents(conn, grant.account)]


async def dependents(conn: AsyncConnection, account: str) -> list[str]:
    """Accounts that delegate directly to ``account``."""
    rows = await conn.execute(
        select(accounts.c.id).where(accounts.c.delegated_account == account).order_by(accounts.c.id)
    )
    return [str(r) for r in rows.scalars()]


async def request(conn: AsyncConnection, account: str, column: str) -> int:
    """Record a reconnect or sync request (``reconnect_requested_ms`` / ``sync_requested_ms``)."""
    ms = now_ms()
    await conn.execute(accounts.update().where(accounts.c.id == account).values({column: ms}))
    return ms


async def set_state(
    conn: AsyncConnection, account: str, state: str, last_error: Mapping[str, Any] | None
) -> bool:
    """Record a connection state (and the error behind it, None to clear).

    Leaves ``updated_ms`` alone: that column means "the account's settings changed" and
    makes its listeners restart. False when the account no longer exists.
    """
    result = await conn.execute(
        accounts.update()
        .where(accounts.c.id == account)
        .values(state=state, last_error=dict(last_error) if last_error is not None else None)
    )
    return result.rowcount == 1


async def set_states(
    conn: AsyncConnection, states: Mapping[str, tuple[str, Mapping[str, Any] | None]]
) -> set[str]:
    """:func:`set_state` for many accounts (account -> (state, last_error)) in a few
    statements; returns the accounts that no longer exist."""
    wanted = sorted(states)
    existing: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        found = await conn.execute(
            select(accounts.c.id).where(accounts.c.id.in_(wanted[start : start + _CHUNK]))
        )
        existing.update(str(a) for a in found.scalars())
    rows = [
        {
            "b_id": account,
            "b_state": state,
            "b_error": dict(error) if error is not None else None,
        }
        for account, (state, error) in states.items()
        if account in existing
    ]
    if rows:
        await conn.execute(
            accounts.update()
            .where(accounts.c.id == bindparam("b_id"))
            .values(
                state=bindparam("b_state"),
                last_error=bindparam("b_error", type_=accounts.c.last_error.type),
            ),
            rows,
        )
    return set(wanted) - existing
