"""The delivery queue with a history behind it: claims and outcomes per second, by index layout.

A relay that has run for a while holds every finished delivery until pruning (seven days by
default). This fills a store with ``--history`` delivered deliveries and ``--pending`` due
ones, then drains the due ones the way the worker does, through ``relay.store.deliveries``:
claim ``--batch`` (one write transaction), record them delivered (another), until none is
left. It does so twice in the same run, on stores that differ only in the queue's indexes:
``baseline`` with the layout of revision 0017 (every delivery in the status indexes) and
``relay`` with the newest (partial indexes holding only due, leased, unfinished and failed
deliveries). Prints one JSON line: ``{engine, history, pending, relay_per_s, baseline_per_s,
ratio, index_pages: {relay, baseline}}`` (``index_pages``: the pages the queue's status indexes
take after the drain).

    python bench/queue_history.py [--engine sqlite|postgresql] [--history 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from relay.config import StoreSettings  # noqa: E402
from relay.store import deliveries as queue  # noqa: E402
from relay.store.deliveries import Outcome  # noqa: E402
from relay.store.engine import Store  # noqa: E402
from relay.store.migrate import _config, migrate  # noqa: E402
from relay.store.schema import DeliveryStatus  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# Events numbered :start to :end - 1 (their number is their time and stream position).
_EVENTS_SQLITE = (
    "WITH RECURSIVE n(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :end)"
    " INSERT INTO events (id, account, event, created_ms, payload, pos)"
    " SELECT 'e' || i, 'a', 'messageNew', i, '{}', i FROM n"
)
_EVENTS_PG = (
    "INSERT INTO events (id, account, event, created_ms, payload, pos)"
    " SELECT 'e' || i, 'a', 'messageNew', i, '{}', i"
    " FROM generate_series(CAST(:start AS bigint), CAST(:end AS bigint) - 1) AS n(i)"
)


def _to_0017(connection: Connection) -> None:
    command.downgrade(_config(connection), "0017")


async def _fill(store: Store, history: int, pending: int) -> None:
    """One route; ``history`` delivered deliveries, then ``pending`` due ones."""
    total = history + pending
    async with store.write() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_routes (id, url, description, events, headers, enabled,"
                " ordering, secret, created_ms, updated_ms, kind) VALUES ('r', 'http://x',"
                " '', '[\"*\"]', '{}', 1, 'none', :secret, 0, 0, 'http')"
            ),
            {"secret": b"x"},
        )
    step = 50_000
    for start in range(0, total, step):
        end = min(total, start + step)
        async with store.write() as conn:
            await conn.execute(
                text(_EVENTS_PG if store.dialect == "postgresql" else _EVENTS_SQLITE),
                {"start": start, "end": end},
            )
            await conn.execute(
                text(
                    "INSERT INTO deliveries (route_id, event_id, status, lane, attempts,"
                    " next_attempt_ms, created_ms, updated_ms, delivered_ms) SELECT 'r', id,"
                    " CASE WHEN created_ms < :history THEN 'delivered' ELSE 'pending' END, 0,"
                    " CASE WHEN created_ms < :history THEN 1 ELSE 0 END, created_ms,"
                    " created_ms, created_ms,"
                    " CASE WHEN created_ms < :history THEN created_ms END"
                    " FROM events WHERE created_ms >= :start AND created_ms < :end"
                ),
                {"history": history, "start": start, "end": end},
            )
    if store.dialect == "postgresql":
        async with store.write() as conn:
            await conn.execute(text("ANALYZE deliveries"))


async def _drain(store: Store, batch: int) -> tuple[int, float]:
    done = 0
    now = 10**13
    started = time.perf_counter()
    while True:
        async with store.write(notify=False) as conn:
            claimed = await queue.claim(
                conn, lane=0, now=now, limit=batch, lease_until=now + 60_000, node="bench"
            )
        if not claimed:
            break
        outcomes = [
            Outcome(c.seq, c.route_id, 1, now, 1, 200, None, "", DeliveryStatus.DELIVERED)
            for c in claimed
        ]
        async with store.write(notify=False) as conn:
            await queue.finish(conn, outcomes, now=now, disable_after_ms=86_400_000)
        done += len(claimed)
    return done, time.perf_counter() - started


_INDEXES = [
    "ix_deliveries_due",
    "ix_deliveries_unfinished",
    "ix_deliveries_leased",
    "ix_deliveries_failed",
    "ix_deliveries_status_lane_next_attempt_ms_seq",
    "ix_deliveries_status_lease_until_ms",
]


async def _index_pages(store: Store) -> int | None:
    """Pages the queue's status indexes take (of 4 KiB on SQLite, 8 KiB on PostgreSQL)."""
    if store.dialect == "postgresql":
        sql = "SELECT sum(pg_relation_size(oid)) / 8192 FROM pg_class WHERE relname = ANY(:n)"
        names: Any = _INDEXES
    else:
        sql = "SELECT count(*) FROM dbstat WHERE name IN (SELECT value FROM json_each(:n))"
        names = json.dumps(_INDEXES)
    async with store.read() as conn:
        try:
            value = await conn.scalar(text(sql), {"n": names})
        except Exception:  # SQLite's dbstat is a compile-time option
            return None
    return int(value or 0)


async def one(
    engine: str, layout: str, tmp: str, history: int, pending: int, batch: int
) -> dict[str, Any]:
    name = f"relay_bench_queue_{layout}"
    if engine == "postgresql":
        await pg_database(PG_ADMIN, name, drop=True)
        await pg_database(PG_ADMIN, name)
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    else:
        url = f"sqlite:///{tmp}/{layout}.db"
    store = Store.open(StoreSettings(url=url))
    try:
        await migrate(store)
        if layout == "baseline":
            async with store.write() as conn:
                await conn.run_sync(_to_0017)
        await _fill(store, history, pending)
        done, seconds = await _drain(store, batch)
        assert done == pending, (layout, done, pending)
        return {"per_s": done / seconds, "pages": await _index_pages(store)}
    finally:
        await store.close()
        if engine == "postgresql":
            await pg_database(PG_ADMIN, name, drop=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--history", type=int, default=500_000)
    parser.add_argument("--pending", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="relay-bench-queue-")
    base = await one(args.engine, "baseline", tmp, args.history, args.pending, args.batch)
    new = await one(args.engine, "relay", tmp, args.history, args.pending, args.batch)
    print(
        json.dumps(
            {
                "engine": args.engine,
                "history": args.history,
                "pending": args.pending,
                "relay_per_s": round(new["per_s"]),
                "baseline_per_s": round(base["per_s"]),
                "ratio": round(new["per_s"] / base["per_s"], 2),
                "index_pages": {"relay": new["pages"], "baseline": base["pages"]},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
