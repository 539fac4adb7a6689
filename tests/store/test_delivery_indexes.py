"""The delivery queue's queries find their rows in the partial indexes (migration 0018).

A planner uses a partial index only when the query's WHERE implies the index's. Each test
reads the plan the database makes for the statement the relay runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ClauseElement

from relay.store import deliveries as queue
from relay.store.engine import Store
from relay.store.schema import DeliveryStatus, deliveries, status_is


async def _plan(conn: AsyncConnection, sql: str, args: tuple[Any, ...] = ()) -> str:
    if conn.dialect.name == "postgresql":
        # The test tables are nearly empty: a scan would win on cost, whatever the indexes.
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = await conn.exec_driver_sql("EXPLAIN " + sql, args)
    else:
        rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, args)
    return "\n".join(str(value) for row in rows.all() for value in row)


def _literal(conn: AsyncConnection, statement: ClauseElement) -> str:
    return str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


async def test_a_claim_reads_the_due_index(store: Store) -> None:
    async with store.write() as conn:
        compiled = queue._CLAIM._for(conn)
        params = {"lane": 0, "now": 1, "limit": 10, "lease_until": 2, "node": "n", "skip": []}
        args = queue._CLAIM._args(compiled, conn.dialect.name, params)
        assert "ix_deliveries_due" in await _plan(conn, compiled.sql, args)


async def test_reaping_reads_the_leased_index(store: Store) -> None:
    async with store.write() as conn:
        statement = select(deliveries.c.seq).where(
            status_is(DeliveryStatus.INFLIGHT), deliveries.c.lease_until_ms < 5
        )
        assert "ix_deliveries_leased" in await _plan(conn, _literal(conn, statement))


async def test_ordered_routes_heads_read_the_unfinished_index(store: Store) -> None:
    async with store.write() as conn:
        statement = (
            select(deliveries.c.route_id, deliveries.c.seq)
            .where(status_is(DeliveryStatus.PENDING, DeliveryStatus.INFLIGHT))
            .order_by(deliveries.c.route_id, deliveries.c.seq)
        )
        assert "ix_deliveries_unfinished" in await _plan(conn, _literal(conn, statement))


async def test_queue_depths_count_in_the_partial_indexes(store: Store) -> None:
    async with store.write() as conn:
        for state, index in (
            (DeliveryStatus.PENDING, "ix_deliveries_due"),
            (DeliveryStatus.INFLIGHT, "ix_deliveries_leased"),
            (DeliveryStatus.FAILED, "ix_deliveries_failed"),
        ):
            statement = select(deliveries.c.seq).where(status_is(state))
            assert index in await _plan(conn, _literal(conn, statement)), state
