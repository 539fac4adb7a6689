"""Webhook throughput: the durable path against a bare aiohttp client loop, same receiver.

The receiver runs in its own process and verifies every request (Standard Webhooks and
X-EE-Wh-Signature). The bare loop signs and POSTs N requests with the same concurrency as the
worker; the durable run stores N events (with their deliveries) in batches while the
DeliveryWorker claims, signs, POSTs and records them. Prints one JSON line:
``{durable_per_s, bare_per_s, ratio, p50_ms, p99_ms, engine, events}`` where p50/p99 are
event stored -> delivery recorded.

    python bench/webhooks.py [--events 20000] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from relay.api.webhooks import RouteCreate, create_route_row  # noqa: E402
from relay.auth.crypto import Cipher, derive_key  # noqa: E402
from relay.config import StoreSettings, WebhookSettings  # noqa: E402
from relay.events.model import Event  # noqa: E402
from relay.metrics import Metrics  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store import events as events_store  # noqa: E402
from relay.store.engine import now_ms  # noqa: E402
from relay.store.migrate import migrate  # noqa: E402
from relay.store.schema import deliveries  # noqa: E402
from relay.webhooks.routes import store_service_secret  # noqa: E402
from relay.webhooks.signing import delivery_headers  # noqa: E402
from relay.webhooks.worker import DeliveryWorker  # noqa: E402
from tests.peers.receiver import spawn as spawn_receiver  # noqa: E402
from tests.proc import free_port  # noqa: E402

SERVICE_SECRET = "bench-service-secret"
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "256"))


async def _accepted(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        return int((await resp.json())["accepted"])


async def _wait_accepted(http: aiohttp.ClientSession, url: str, n: int) -> float:
    # The receiver is another process: polling its counter is the only way to see progress.
    while (await _accepted(http, url)) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def bare(url: str, stats: str, secret: str, n: int, base: int) -> float:
    """A plain aiohttp loop: sign and POST ``n`` requests, ``CONCURRENCY`` at a time."""
    body = json.dumps({"event": "messageNew", "data": {"n": 0}}).encode()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def run() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                headers = delivery_headers(
                    msg_id=f"bare-{i}",
                    timestamp=int(time.time()),
                    body=body,
                    route_secrets=(secret,),
                    service_secret=SERVICE_SECRET,
                    attempt=1,
                    user_agent="bench",
                    custom={},
                )
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(run() for _ in range(CONCURRENCY)))
        finished = await _wait_accepted(http, stats, base + n)
    return n / (finished - started)


async def prepare_store(store_url: str, url: str) -> tuple[Store, Cipher, str]:
    """A migrated store with the service secret and one route to ``url``; returns its secret."""
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    cipher = Cipher(derive_key("bench-secret-value"))
    async with store.write() as conn:
        await store_service_secret(conn, cipher, SERVICE_SECRET)
        _, secret = await create_route_row(
            conn, cipher, "bench", RouteCreate.model_validate({"url": url})
        )
    return store, cipher, secret


async def durable(store: Store, cipher: Cipher, stats: str, n: int, base: int) -> dict[str, float]:
    """Store ``n`` events in batches while the worker delivers them; measure to the last one."""
    settings = WebhookSettings(
        allow_networks=("127.0.0.0/8",), concurrency=CONCURRENCY, batch_size=512
    )
    worker = DeliveryWorker(store, cipher, settings, Metrics.create())
    await worker.start()
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for start in range(0, n, 500):
            batch = [
                Event("messageNew", "acct", {"n": i}, now_ms())
                for i in range(start, min(n, start + 500))
            ]
            async with store.write() as conn:
                await events_store.record(
                    conn, batch, default_service_url="https://relay.example.com"
                )
        finished = await _wait_accepted(http, stats, base + n)
    await worker.stop(10)
    async with store.read() as conn:
        rows = await conn.execute(select(deliveries.c.created_ms, deliveries.c.delivered_ms))
        latencies = sorted(int(d) - int(c) for c, d in rows.all() if d is not None)
    return {
        "durable_per_s": n / (finished - started),
        "p50_ms": float(latencies[len(latencies) // 2]),
        "p99_ms": float(latencies[max(0, int(len(latencies) * 0.99) - 1)]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    stats = f"http://127.0.0.1:{port}/stats"
    tmp = tempfile.mkdtemp(prefix="relay-bench-")
    dbname = f"relay_bench_{os.getpid()}"
    if args.engine == "sqlite":
        store_url = f"sqlite:///{tmp}/bench.db"
    else:
        await pg_database(args.pg, dbname)
        store_url = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
    store, cipher, secret = await prepare_store(store_url, url)
    receiver = await spawn_receiver(port, secret, SERVICE_SECRET)
    try:
        bare_rate = await bare(url, stats, secret, args.events, 0)
        result = await durable(store, cipher, stats, args.events, args.events)
    finally:
        receiver.send_signal(signal.SIGTERM)
        await asyncio.wait_for(receiver.wait(), 10)
        await store.close()
        if args.engine == "postgresql":
            await pg_database(args.pg, dbname, drop=True)
    print(
        json.dumps(
            {
                "durable_per_s": round(result["durable_per_s"]),
                "bare_per_s": round(bare_rate),
                "ratio": round(result["durable_per_s"] / bare_rate, 2),
                "p50_ms": result["p50_ms"],
                "p99_ms": result["p99_ms"],
                "engine": args.engine,
                "events": args.events,
            }
        )
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
