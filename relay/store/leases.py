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
    """Renew this node's leases and take those of ``accounts`` that are free or expired.

    Returns the accounts of ``accounts`` this node now holds. In the steady state this is
    one read and one UPDATE by node, however many accounts there are; leases of accounts no
    longer in ``accounts`` are given up.
    """
    wanted = set(accounts)
    expires = now_ms + lease_ms
    current = {
        str(account): (str(holder), int(until))
        for account, holder, until in (
            await conn.execute(
                select(account_leases.c.account, account_leases.c.node, account_leases.c.expires_ms)
            )
        ).all()
    }
    await conn.execute(
        account_leases.update().where(account_leases.c.node == node).values(expires_ms=expires)
    )
    stale = sorted(a for a, (holder, _) in current.items() if holder == node and a not in wanted)
    for chunk in _chunks(stale):
        await conn.execute(
            account_leases.delete().where(
                account_leases.c.node == node, account_leases.c.account.in_(chunk)
            )
        )
    missing = sorted(wanted - current.keys())
    if missing:
        insert = (
            postgresql.insert(account_leases)
            if conn.dialect.name == "postgresql"
            else sqlite.insert(account_leases)
        )
        for chunk in _chunks(missing):
            await conn.execute(
                insert.on_conflict_do_nothing(),
                [{"account": a, "node": node, "expires_ms": expires} for a in chunk],
            )
    expired = sorted(
        a
        for a, (holder, until) in current.items()
        if a in wanted and holder != node and until < now_ms
    )
    for chunk in _chunks(expired):
        # The expiry test is repeated in the UPDATE: of two nodes racing, only one wins.
        await conn.execute(
            account_leases.update()
            .where(account_leases.c.account.in_(chunk), account_leases.c.expires_ms < now_ms)
            .values(node=node, expires_ms=expires)
        )
    held = (
        await conn.execute(select(account_leases.c.account).where(account_leases.c.node == node))
    ).scalars()
    return {str(a) for a in held} & wanted


async def take(
    conn: AsyncConnection, node: str, accounts: Iterable[str], *, now_ms: int, lease_ms: int
) -> set[str]:
    """Take or renew the leases of ``accounts`` that are free, expired or this node's.

    Returns the accounts of ``accounts`` this node now holds. Unlike :func:`claim` it leaves
    every other lease alone: it is for the few accounts the API just changed, between scans.
    """
    wanted = sorted(set(accounts))
    expires = now_ms + lease_ms
    insert = (
        postgresql.insert(account_leases)
        if conn.dialect.name == "postgresql"
        else sqlite.insert(account_leases)
    )
    held: set[str] = set()
    for chunk in _chunks(wanted):
        await conn.execute(
            insert.on_conflict_do_nothing(),
            [{"account": a, "node": node, "expires_ms": expires} for a in chunk],
        )
        # The expiry test is in the UPDATE: of two nodes racing, only one wins.
        await conn.execute(
            account_leases.update()
            .where(
                account_leases.c.account.in_(chunk),
                (account_leases.c.node == node) | (account_leases.c.expires_ms < now_ms),
            )
            .values(node=node, expires_ms=expires)
        )
        rows = await conn.execute(
            select(account_leases.c.account).where(
                account_leases.c.node == node, account_leases.c.account.in_(chunk)
            )
        )
        held.update(str(a) for a in rows.scalars())
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
