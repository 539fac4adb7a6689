"""Queries on ``account_leases``: which node watches which account, and fencing.

A node holds an account while its lease is unexpired and renews it on every scan; a lease
that ran out (its node stopped or died) is taken by the node the assignment
(:mod:`relay.sources.assignment`) names. Times are epoch milliseconds, so the nodes' clocks
should agree to well within the lease length.

Every change of owner adds one to the lease's ``epoch``. A node's watcher keeps the epoch it
started with, and every write it makes for its account first checks (:func:`fenced`) that the
lease still has this node and this epoch: a node that was paused past its lease (a long GC,
``SIGSTOP``, a partition from the database) and wakes up finds its writes refused instead of
writing over the new owner's. A released lease keeps its row (expired, with no node), so the
epoch never goes back.

On PostgreSQL a write that passed the check holds a shared advisory lock on the account
until it commits, and a takeover only takes an account whose exclusive advisory lock it can
get at once (else the next scan tries again): no takeover overtakes a checked write. Advisory
locks, not row locks: a row lock on the lease would join the lock order of the accounts row
(deleting an account deletes its lease) and deadlock with writes that lock both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, String, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from relay.errors import LeaseLost
from relay.store import dialect
from relay.store.compiled import Statement, any_of
from relay.store.schema import account_leases

__all__ = ["Lease", "check", "claim", "fenced", "held", "holders", "release", "take"]

# Accounts per statement: keeps parameter lists far below both engines' limits.
_CHUNK = 500
# The node of a released lease.
_NOBODY = ""
# Seed of the advisory lock keys of leases (keeps them apart from other advisory locks).
_LOCK_SEED = 0x6C65617365  # "lease"


def _lock_key(column: Any) -> Any:
    return func.hashtextextended(column, _LOCK_SEED)


@dataclass(frozen=True, slots=True)
class Lease:
    """What a watcher holds: its node and the epoch of the lease it started under."""

    node: str
    epoch: int


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def _update(
    conn: AsyncConnection,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    *,
    takeover: bool = False,
) -> None:
    """UPDATE the lease rows matching ``where``.

    On PostgreSQL the rows are locked first, in account order: every transaction that locks
    several lease rows takes them in that one order, so two nodes' scans never wait in a
    cycle (a plain multi-row UPDATE locks rows in whatever order it finds them). A
    ``takeover`` leaves out, for the next scan, rows another transaction holds and accounts
    a checked write holds (see the module docstring).
    """
    if conn.dialect.name != "postgresql":
        await conn.execute(account_leases.update().where(*where).values(values))
        return
    conditions = list(where)
    if takeover:
        conditions.append(func.pg_try_advisory_xact_lock(_lock_key(account_leases.c.account)))
    lock = (
        select(account_leases.c.account)
        .where(*conditions)
        .order_by(account_leases.c.account)
        .with_for_update(skip_locked=takeover)
    )
    locked = [str(a) for a in (await conn.execute(lock)).scalars()]
    for chunk in _chunks(locked):
        await conn.execute(
            account_leases.update()
            .where(account_leases.c.account.in_(chunk), *where)
            .values(values)
        )


async def claim(
    conn: AsyncConnection, node: str, accounts: Iterable[str], *, now_ms: int, lease_ms: int
) -> dict[str, int]:
    """Renew this node's leases and take those of ``accounts`` that are free or expired.

    Returns every account this node now holds, with its epoch: those of ``accounts``, and
    those it held before that are no longer in ``accounts`` (the caller hands them over:
    stops their watchers, then :func:`release`). A lease another node holds and has not let
    run out is left alone. In the steady state this is a renewal by node and two reads,
    however many accounts there are.
    """
    wanted = sorted(set(accounts))
    expires = now_ms + lease_ms
    # Our own rows: renewing them needs no condition on expiry, since a lease that ran out
    # and was taken has another node in it.
    await _update(conn, [account_leases.c.node == node], {"expires_ms": expires})
    current = await holders(conn, wanted)
    for chunk in _chunks([a for a in wanted if a not in current]):
        await _insert_first(conn, node, chunk, expires=expires)
    expired = [
        a for a in wanted if a in current and current[a][0] != node and current[a][1] < now_ms
    ]
    for chunk in _chunks(expired):
        await _take_expired(conn, node, chunk, now_ms=now_ms, expires=expires)
    return await held(conn, node)


async def _insert_first(
    conn: AsyncConnection, node: str, chunk: list[str], *, expires: int
) -> None:
    # Accounts that never had a lease: epoch 1 (of two nodes inserting, one wins).
    await conn.execute(
        dialect.insert(conn, account_leases).on_conflict_do_nothing(),
        [{"account": a, "node": node, "expires_ms": expires, "epoch": 1} for a in chunk],
    )


async def _take_expired(
    conn: AsyncConnection, node: str, chunk: list[str], *, now_ms: int, expires: int
) -> None:
    # The expiry test is in the UPDATE: of two nodes racing, only one wins. A row another
    # transaction holds (a write being fenced, another node's claim) waits for the next scan.
    await _update(
        conn,
        [
            account_leases.c.account.in_(chunk),
            account_leases.c.expires_ms < now_ms,
            account_leases.c.node != node,
        ],
        {"node": node, "expires_ms": expires, "epoch": account_leases.c.epoch + 1},
        takeover=True,
    )


async def take(
    conn: AsyncConnection, node: str, accounts: Iterable[str], *, now_ms: int, lease_ms: int
) -> dict[str, int]:
    """Take or renew the leases of ``accounts`` that are free, expired or this node's.

    Returns the accounts of ``accounts`` this node now holds, with their epochs. Unlike
    :func:`claim` it leaves every other lease alone: it is for the few accounts the API just
    changed, between scans.
    """
    wanted = sorted(set(accounts))
    expires = now_ms + lease_ms
    out: dict[str, int] = {}
    for chunk in _chunks(wanted):
        await _insert_first(conn, node, chunk, expires=expires)
        await _update(
            conn,
            [account_leases.c.account.in_(chunk), account_leases.c.node == node],
            {"expires_ms": expires},
        )
        await _take_expired(conn, node, chunk, now_ms=now_ms, expires=expires)
        rows = await conn.execute(
            select(account_leases.c.account, account_leases.c.epoch).where(
                account_leases.c.node == node, account_leases.c.account.in_(chunk)
            )
        )
        out.update({str(a): int(e) for a, e in rows.all()})
    return out


async def holders(conn: AsyncConnection, accounts: list[str]) -> dict[str, tuple[str, int]]:
    """The lease rows of ``accounts`` that exist: account -> (node, expires_ms)."""
    out: dict[str, tuple[str, int]] = {}
    for chunk in _chunks(accounts):
        result = await conn.execute(
            select(
                account_leases.c.account, account_leases.c.node, account_leases.c.expires_ms
            ).where(account_leases.c.account.in_(chunk))
        )
        out.update({str(a): (str(n), int(e)) for a, n, e in result.all()})
    return out


async def held(conn: AsyncConnection, node: str) -> dict[str, int]:
    """The accounts whose lease ``node`` holds, with their epochs."""
    result = await conn.execute(
        select(account_leases.c.account, account_leases.c.epoch).where(
            account_leases.c.node == node
        )
    )
    return {str(a): int(e) for a, e in result.all()}


async def release(conn: AsyncConnection, node: str, accounts: Iterable[str] | None = None) -> None:
    """Give up this node's leases (all of them, or those of ``accounts``) for others to take
    at once; the rows stay, with their epochs."""
    values = {"node": _NOBODY, "expires_ms": 0}
    if accounts is None:
        await _update(conn, [account_leases.c.node == node], values)
        return
    for chunk in _chunks(sorted(set(accounts))):
        await _update(
            conn, [account_leases.c.node == node, account_leases.c.account.in_(chunk)], values
        )


# Compiled (relay.store.compiled): run in every listener write group, a shared write.
# PostgreSQL: the accounts' shared advisory locks, from one array parameter.
_LOCK_SHARED = Statement(
    lambda _: select(
        func.pg_advisory_xact_lock_shared(
            _lock_key(
                func.unnest(bindparam("names", type_=ARRAY(String))).table_valued("name").c.name
            )
        )
    )
)
_HOLDERS = Statement(
    lambda name: select(
        account_leases.c.account, account_leases.c.node, account_leases.c.epoch
    ).where(any_of(account_leases.c.account, "accounts", name)),
    lists=["accounts"],
)


async def fenced(
    conn: AsyncConnection, held_: Iterable[tuple[str, Lease]]
) -> set[tuple[str, Lease]]:
    """The pairs of ``held_`` (account, lease) whose lease row no longer has that node and
    epoch: their writes must not be made.

    Call it inside the write transaction that writes for those accounts, before writing. On
    PostgreSQL the accounts' shared advisory locks are held until the transaction ends, so a
    node taking one over waits for the write to commit instead of overtaking it; SQLite's
    write transaction excludes every other writer.
    """
    pairs = list(held_)
    if not pairs:
        return set()
    accounts = sorted({account for account, _ in pairs})
    if conn.dialect.name == "postgresql":
        await _LOCK_SHARED.rows(conn, names=accounts)
    found = {str(a): (str(n), int(e)) for a, n, e in await _HOLDERS.rows(conn, accounts=accounts)}
    return {(a, lease) for a, lease in pairs if found.get(a) != (lease.node, lease.epoch)}


async def check(conn: AsyncConnection, account: str, lease: Lease | None) -> None:
    """Raise :class:`LeaseLost` unless ``lease`` still holds ``account`` (see
    :func:`fenced`); None (a watcher run outside a supervisor, in tests) always holds."""
    if lease is not None and await fenced(conn, [(account, lease)]):
        raise LeaseLost(account)
