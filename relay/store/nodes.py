"""Queries on ``cluster_nodes``: the nodes sharing this store, and their heartbeats.

A node registers when its supervisor starts, beats on every scan, and deletes its row when
it stops; a node whose heartbeat is older than the account lease is dead (it crashed, hangs,
or lost the database), and its accounts go to the others once its leases run out. Times are
epoch milliseconds, as everywhere in the store.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store import dialect
from relay.store.schema import (
    DeliveryStatus,
    OutboxStatus,
    account_leases,
    cluster_nodes,
    deliveries,
    outbox,
    status_is,
)

__all__ = ["beat", "forget_dead", "leave", "live", "new_id", "register", "remove", "rows", "work"]


def new_id() -> str:
    """An id for a node not given one: host, process and a random suffix (at most 60
    characters, within ``cluster.node_id``'s 64)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


async def register(conn: AsyncConnection, node: str, address: str, *, now_ms: int) -> None:
    """Add (or refresh) this node, alive and not leaving."""
    values = {"address": address, "started_ms": now_ms, "heartbeat_ms": now_ms, "leaving": False}
    await conn.execute(
        dialect.insert(conn, cluster_nodes)
        .values(id=node, **values)
        .on_conflict_do_update(index_elements=[cluster_nodes.c.id], set_=values)
    )


async def beat(conn: AsyncConnection, node: str, address: str, *, now_ms: int) -> None:
    """This node is alive; its row comes back if another node removed it as dead."""
    result = await conn.execute(
        update(cluster_nodes)
        .where(cluster_nodes.c.id == node)
        .values(heartbeat_ms=now_ms, leaving=False)
    )
    if result.rowcount == 0:
        await register(conn, node, address, now_ms=now_ms)


async def leave(conn: AsyncConnection, node: str) -> None:
    """This node is shutting down: the others stop counting it in the assignment."""
    await conn.execute(update(cluster_nodes).where(cluster_nodes.c.id == node).values(leaving=True))


async def remove(conn: AsyncConnection, node: str) -> None:
    """This node is gone (the last step of a clean shutdown)."""
    await conn.execute(delete(cluster_nodes).where(cluster_nodes.c.id == node))


async def live(conn: AsyncConnection, *, now_ms: int, lease_ms: int) -> list[str]:
    """The ids of the nodes that count in the assignment: beating, not leaving."""
    result = await conn.execute(
        select(cluster_nodes.c.id).where(
            cluster_nodes.c.heartbeat_ms >= now_ms - lease_ms,
            cluster_nodes.c.leaving.is_(False),
        )
    )
    return sorted(str(n) for n in result.scalars())


async def rows(conn: AsyncConnection) -> Sequence[RowMapping]:
    """Every registered node (live or not), oldest first."""
    result = await conn.execute(select(cluster_nodes).order_by(cluster_nodes.c.started_ms))
    return result.mappings().all()


async def forget_dead(conn: AsyncConnection, *, before_ms: int) -> int:
    """Delete the rows of nodes that have not beaten since ``before_ms``."""
    result = await conn.execute(
        delete(cluster_nodes).where(cluster_nodes.c.heartbeat_ms < before_ms)
    )
    return int(result.rowcount or 0)


async def work(conn: AsyncConnection, *, now_ms: int) -> dict[str, dict[str, int]]:
    """Per node: ``accounts`` (unexpired leases), ``deliveries`` (claimed, in flight) and
    ``outbox`` (messages being sent)."""
    out: dict[str, dict[str, int]] = {}

    def add(node: object, kind: str, count: int) -> None:
        if node:  # a released lease has no node
            out.setdefault(str(node), {"accounts": 0, "deliveries": 0, "outbox": 0})[kind] = count

    leases = await conn.execute(
        select(account_leases.c.node, func.count())
        .where(account_leases.c.expires_ms >= now_ms)
        .group_by(account_leases.c.node)
    )
    for node, count in leases.all():
        add(node, "accounts", int(count))
    claimed = await conn.execute(
        select(deliveries.c.claimed_by, func.count())
        .where(status_is(DeliveryStatus.INFLIGHT))
        .group_by(deliveries.c.claimed_by)
    )
    for node, count in claimed.all():
        add(node, "deliveries", int(count))
    sending = await conn.execute(
        select(outbox.c.claimed_by, func.count())
        .where(outbox.c.status == OutboxStatus.SENDING)
        .group_by(outbox.c.claimed_by)
    )
    for node, count in sending.all():
        add(node, "outbox", int(count))
    return out
