"""Ingestion under a burst: changes from many sources, stored and delivered as signed webhooks.

    python bench/ingest.py [--sources 2000] [--changes 20000] [--rate 1000] [--seconds 10]
                           [--engine sqlite|postgresql]

The relay's own path from a source's change to a signed webhook, with the sources simulated
in-process: ``--sources`` folders (one account each), each handing new-message changes
(a parsed FETCH, as the IMAP listener hands them) to the one :class:`FolderSink`, which
normalizes them to ``messageNew`` events and stores them with their folder state and
deliveries (group-committed); a :class:`DeliveryWorker` signs and POSTs them to a receiver
process that verifies both signatures (``tests.peers.receiver``) and measures, for each
event, its ``date`` (when the sink made it) -> arrival. Message content is not read (no IMAP
server here): ``bench/imap_scale.py`` covers the listener side.

Three figures, the first two against the same rows written without the relay:

- ``baseline_per_s``: the rows a change costs (folder state update, seen-message key, event,
  delivery) inserted with the bare driver (``sqlite3`` / ``asyncpg``), 500 changes per
  transaction, one writer: what the database itself allows.
- burst: every source hands ``--changes`` / ``--sources`` changes one after the other, all
  sources at once; ``stored_per_s`` is changes / time until the last commit returned,
  ``delivered_per_s`` changes / time until the receiver accepted the last one.
- steady: ``--rate`` changes per second spread evenly over the sources for ``--seconds``;
  ``steady_p50_ms`` / ``steady_p99_ms`` are change -> verified webhook.

Prints one JSON line: ``{engine, sources, changes, baseline_per_s, stored_per_s,
delivered_per_s, stored_vs_baseline, rate, steady_p50_ms, steady_p99_ms, steady_count,
goals}``. Goals (SQLite): ``delivered_per_s`` >= 5,000; ``steady_p99_ms`` < 300 at 1,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from imapclient.response_types import Address, Envelope

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from relay.api.webhooks import RouteCreate, create_route_row  # noqa: E402
from relay.auth.crypto import Cipher, derive_key  # noqa: E402
from relay.config import StoreSettings, WebhookSettings  # noqa: E402
from relay.events.model import new_event_id  # noqa: E402
from relay.metrics import Metrics  # noqa: E402
from relay.sources.imap.sink import FolderRef, FolderSink, NewMessage  # noqa: E402
from relay.sources.imap.state import FolderState  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store import accounts as accounts_store  # noqa: E402
from relay.store import folders as folders_store  # noqa: E402
from relay.store.engine import now_ms  # noqa: E402
from relay.store.migrate import migrate  # noqa: E402
from relay.webhooks.routes import store_service_secret  # noqa: E402
from relay.webhooks.worker import DeliveryWorker  # noqa: E402
from tests.peers.receiver import spawn as spawn_receiver  # noqa: E402
from tests.proc import free_port  # noqa: E402

SERVICE_SECRET = "bench-service-secret"
SERVICE_URL = "https://relay.example.com"
GOAL_DELIVERED_PER_S = 5000
GOAL_STEADY_P99_MS = 300
_BASELINE_BATCH = 500


def fetch(uid: int) -> dict[str, Any]:
    """A parsed FETCH of a small plain-text message, as the listener hands it over."""
    return {
        "UID": uid,
        "FLAGS": (),
        "RFC822.SIZE": 2048,
        "INTERNALDATE": datetime.now(UTC),
        "ENVELOPE": Envelope(
            date=datetime.now(UTC),
            subject=f"Order {uid}".encode(),
            from_=(Address(b"Customer", None, b"customer", b"example.com"),),
            sender=None,
            reply_to=None,
            to=(Address(b"Support", None, b"support", b"example.com"),),
            cc=None,
            bcc=None,
            in_reply_to=None,
            message_id=f"<m{uid}.{time.monotonic_ns()}@example.com>".encode(),
        ),
        "BODYSTRUCTURE": (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 512, 10),
    }


class Source:
    """One watched folder: its state as a listener keeps it between commits."""

    def __init__(self, sink: FolderSink, account: str, state: FolderState) -> None:
        self.sink = sink
        self.folder = FolderRef(account, "INBOX", None)
        self.state = state
        self.lock = asyncio.Lock()

    async def change(self) -> None:
        """One new message: the state moves on and the change is committed."""
        async with self.lock:
            uid = self.state.uidnext or 1
            self.state.uidnext = uid + 1
            self.state.uids.add(uid)
            await self.sink.commit(self.folder, self.state, [NewMessage(fetch(uid))])


async def prepare(store: Store, cipher: Cipher, n: int, url: str) -> tuple[list[str], str]:
    """Accounts with a baselined INBOX each, the service secret, one route; its secret."""
    await migrate(store)
    names = [f"acct{i:05d}" for i in range(n)]
    async with store.write() as conn:
        await store_service_secret(conn, cipher, SERVICE_SECRET)
        _, secret = await create_route_row(
            conn, cipher, "bench", RouteCreate.model_validate({"url": url})
        )
        for name in names:
            await accounts_store.insert(
                conn,
                {
                    "id": name,
                    "name": name,
                    "email": f"{name}@example.com",
                    "backend": "imap",
                    "state": "connected",
                    "config": {},
                },
            )
            row = await folders_store.ensure(conn, name, "INBOX", None)
            state = FolderState.from_row(row)
            state.uidvalidity, state.uidnext = 1, 1
            await folders_store.save(
                conn, name, "INBOX", version=state.version, values=state.columns()
            )
    return names, secret


async def sources_of(store: Store, sink: FolderSink, names: list[str]) -> list[Source]:
    async with store.read() as conn:
        rows = [await folders_store.get(conn, name, "INBOX") for name in names]
    return [
        Source(sink, name, FolderState.from_row(r))
        for name, r in zip(names, rows, strict=True)
        if r
    ]


# -- the bare driver ------------------------------------------------------------------------


def _baseline_rows(n: int, route: str, accounts: int) -> list[tuple[Any, ...]]:
    payload = json.dumps(
        {"serviceUrl": SERVICE_URL, "event": "messageNew", "data": fetch(1)["UID"]}
    )
    payload += " " * 1200  # about the size of a messageNew envelope
    ms = now_ms()
    return [(new_event_id(), f"acct{i % accounts:05d}", ms, payload, route, i) for i in range(n)]


def baseline_sqlite(path: str, n: int, route: str, accounts: int) -> float:
    """The rows of ``n`` changes written with the sqlite3 module, 500 per transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    rows = _baseline_rows(n, route, accounts)
    started = time.perf_counter()
    for start in range(0, n, _BASELINE_BATCH):
        chunk = rows[start : start + _BASELINE_BATCH]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "UPDATE imap_folders SET uidnext = uidnext + 1, version = version + 1,"
            " updated_ms = ? WHERE account = ? AND path = 'INBOX'",
            [(ms, account) for _, account, ms, _, _, _ in chunk],
        )
        db.executemany(
            "INSERT OR IGNORE INTO seen_messages (account, key_hash) VALUES (?, ?)",
            [(account, i) for _, account, _, _, _, i in chunk],
        )
        db.executemany(
            "INSERT INTO events (id, account, event, created_ms, payload)"
            " VALUES (?, ?, 'messageNew', ?, ?)",
            [(eid, account, ms, payload) for eid, account, ms, payload, _, _ in chunk],
        )
        db.executemany(
            "INSERT INTO deliveries (route_id, event_id, status, lane, attempts,"
            " next_attempt_ms, created_ms, updated_ms) VALUES (?, ?, 'pending', 0, 0, ?, ?, ?)",
            [(r, eid, ms, ms, ms) for eid, _, ms, _, r, _ in chunk],
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return n / elapsed


async def baseline_postgresql(dsn: str, n: int, route: str, accounts: int) -> float:
    """The same rows with asyncpg, 500 changes per transaction."""
    db = await asyncpg.connect(dsn)
    rows = _baseline_rows(n, route, accounts)
    started = time.perf_counter()
    for start in range(0, n, _BASELINE_BATCH):
        chunk = rows[start : start + _BASELINE_BATCH]
        async with db.transaction():
            await db.executemany(
                "UPDATE imap_folders SET uidnext = uidnext + 1, version = version + 1,"
                " updated_ms = $1 WHERE account = $2 AND path = 'INBOX'",
                [(ms, account) for _, account, ms, _, _, _ in chunk],
            )
            await db.executemany(
                "INSERT INTO seen_messages (account, key_hash) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                [(account, i) for _, account, _, _, _, i in chunk],
            )
            await db.executemany(
                "INSERT INTO events (id, account, event, created_ms, payload)"
                " VALUES ($1, $2, 'messageNew', $3, $4)",
                [(eid, account, ms, payload) for eid, account, ms, payload, _, _ in chunk],
            )
            await db.executemany(
                "INSERT INTO deliveries (route_id, event_id, status, lane, attempts,"
                " next_attempt_ms, created_ms, updated_ms)"
                " VALUES ($1, $2, 'pending', 0, 0, $3, $4, $5)",
                [(r, eid, ms, ms, ms) for eid, _, ms, _, r, _ in chunk],
            )
    elapsed = time.perf_counter() - started
    await db.close()
    return n / elapsed


# -- the relay's path -----------------------------------------------------------------------


async def _stats(
    http: aiohttp.ClientSession, url: str, since_ms: int | None = None
) -> dict[str, Any]:
    """The receiver's counts; with ``since_ms``, also the latencies of the events dated
    since then (the receiver sorts them all for that: not for progress polls)."""
    params = {} if since_ms is None else {"since": str(since_ms)}
    async with http.get(url, params=params) as resp:
        return dict(await resp.json())


async def _wait_accepted(http: aiohttp.ClientSession, url: str, n: int) -> float:
    # The receiver is another process: polling its counter is the only way to see progress.
    while (await _stats(http, url))["accepted"] < n:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def burst(sources: list[Source], changes: int, stats: str, base: int) -> dict[str, float]:
    each = max(1, changes // len(sources))
    total = each * len(sources)

    async def run(source: Source) -> None:
        for _ in range(each):
            await source.change()

    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        await asyncio.gather(*(run(s) for s in sources))
        stored = time.perf_counter()
        delivered = await _wait_accepted(http, stats, base + total)
    return {
        "changes": total,
        "stored_per_s": total / (stored - started),
        "delivered_per_s": total / (delivered - started),
    }


async def steady(
    sources: list[Source], rate: float, seconds: float, stats: str, base: int
) -> dict[str, Any]:
    """``rate`` changes per second, round-robin over the sources, for ``seconds``."""
    loop = asyncio.get_running_loop()
    since = now_ms()
    started = loop.time()
    total = int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()
    for i in range(total):
        due = started + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(sources[i % len(sources)].change())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    async with aiohttp.ClientSession() as http:
        await _wait_accepted(http, stats, base + total)
        result = await _stats(http, stats, since)
    return {"count": total, **result["latency_ms"]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    stats = f"http://127.0.0.1:{port}/stats"
    tmp = tempfile.mkdtemp(prefix="relay-bench-")
    dbname = f"relay_bench_{os.getpid()}"
    if args.engine == "sqlite":
        store_url = f"sqlite:///{tmp}/bench.db"
        bare_url = f"sqlite:///{tmp}/bare.db"
    else:
        for name in (dbname, dbname + "_bare"):
            await pg_database(args.pg, name)
        store_url = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
        bare_url = store_url + "_bare"
    cipher = Cipher(derive_key("bench-secret-value"))

    # The baseline runs first, on its own database with the same schema and rows.
    bare_store = Store.open(StoreSettings(url=bare_url))
    await prepare(bare_store, cipher, args.sources, url)
    await bare_store.close()
    if args.engine == "sqlite":
        baseline = baseline_sqlite(f"{tmp}/bare.db", args.changes, "bench", args.sources)
    else:
        baseline = await baseline_postgresql(
            bare_url.replace("postgresql://", "postgres://", 1), args.changes, "bench", args.sources
        )

    store = Store.open(StoreSettings(url=store_url))
    names, secret = await prepare(store, cipher, args.sources, url)
    receiver = await spawn_receiver(port, secret, SERVICE_SECRET, latency=True)
    sink = FolderSink(store, service_url=SERVICE_URL, max_payload_bytes=256 * 1024)
    worker = DeliveryWorker(
        store,
        cipher,
        WebhookSettings(allow_networks=("127.0.0.0/8",)),
        Metrics.create(),
    )
    try:
        await worker.start()
        sources = await sources_of(store, sink, names)
        first = await burst(sources, args.changes, stats, 0)
        second = await steady(sources, args.rate, args.seconds, stats, int(first["changes"]))
    finally:
        await worker.stop(10)
        await sink.close()
        receiver.send_signal(signal.SIGTERM)
        await asyncio.wait_for(receiver.wait(), 10)
        await store.close()
        if args.engine == "postgresql":
            for name in (dbname, dbname + "_bare"):
                await pg_database(args.pg, name, drop=True)
    return {
        "engine": args.engine,
        "sources": args.sources,
        "changes": int(first["changes"]),
        "baseline_per_s": round(baseline),
        "stored_per_s": round(first["stored_per_s"]),
        "delivered_per_s": round(first["delivered_per_s"]),
        "stored_vs_baseline": round(first["stored_per_s"] / baseline, 2),
        "rate": args.rate,
        "steady_p50_ms": second.get("p50"),
        "steady_p99_ms": second.get("p99"),
        "steady_count": second["count"],
        "goals": {
            "delivered_per_s": GOAL_DELIVERED_PER_S,
            "steady_p99_ms": GOAL_STEADY_P99_MS,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
