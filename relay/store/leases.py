"""Queries on ``account_leases``: which node watches which account.

A node holds an account while its lease is unexpired and renews it on every scan; a lease
that ran out (its node stopped or died) is taken by the next node that scans. Times are
epoch milliseconds, so the nodes' clocks should agree to well within the lease length.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.schema import account_leases

# Accounts per statement: keeps parameter lists far below both engines' limits.
_CHUNK = 500


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def claim(
    conn: AsyncConnection, node: str, accounts: Iterable[str], *, now_ms: int, lease_ms: int
) -> set[str]:
    """Take or renew the lease of every account in ``accounts`` that is free, expired or ours.

    Returns the accounts this node now holds.
    """
    wanted = sorted(set(accounts))
    if not wanted:
        return set()
    expires = now_ms + lease_ms
    insert = (
        postgresql.insert(account_leases)
        if conn.dialect.name == "postgresql"
        else sqlite.insert(account_leases)
    )
    for chunk in _chunks(wanted):
        existing = set(
            (
                await conn.execute(
                    select(account_leases.c.account).where(account_leases.c.account.in_(chunk))
                )
            ).scalars()
        )
        missing = [a for a in chunk if a not in existing]
        if missing:
            await conn.execute(
                insert.on_conflict_do_nothing(),
                [{"account": a, "node": node, "expires_ms": expires} for a in missing],
            )
        await conn.execute(
            account_leases.update()
            .where(
                account_leases.c.account.in_(chunk),
                (account_leases.c.node == node) | (account_leases.c.expires_ms < now_ms),
            )
            .values(node=node, expires_ms=expires)
        )
    held: set[str] = set()
    for chunk in _chunks(wanted):
        held.update(
            (
                await conn.execute(
                    select(account_leases.c.account).where(
                        account_leases.c.account.in_(chunk), account_leases.c.node == node
                    )
                )
            ).scalars()
        )
    return held


async def release(conn: AsyncConnection, node: str, accounts: Iterable[str] | None = None) -> None:
    """Give up this node's leases (all of them, or those of ``accounts``)."""
    if accounts is None:
        await conn.execute(account_leases.delete().where(account_leases.c.node == node))
        return
    for chunk in _chunks(sorted(set(accounts))):
        await conn.execute(
            account_leases.delete().where(
                account_leases.c.node == node, account_leases.c.account.in_(chunk)
            )
        )
