"""Webhook throughput: the durable path against a bare aiohttp client loop, same receiver.

The receiver runs in its own process and verifies every request (Standard Webhooks and
X-EE-Wh-Signature). The bare loop signs and POSTs N requests with the same concurrency as the
worker; the durable run stores N events (with their deliveries) in batches while the
DeliveryWorker claims, signs, POSTs and records them (``ratio``: durable / bare, the goal);
the drain run stores N events first and then starts the worker (``drain_ratio``: the
delivery path without the producer's share of the one core). The three alternate for
``--rounds`` rounds; the figures are medians. Prints one JSON line:
``{durable_per_s, bare_per_s, ratio, ratio_range, drain_per_s, drain_ratio, p50_ms, p99_ms,
engine, events, rounds, goals}`` where p50/p99 are event stored -> delivery recorded.

    python bench/webhooks.py [--events 20000] [--rounds 5] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
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
# Durable deliveries per second as a share of the bare loop's, same run.
GOALS = {"sqlite": 0.7, "postgresql": 0.6}


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


def _worker(store: Store, cipher: Cipher) -> DeliveryWorker:
    settings = WebhookSettings(
        allow_networks=("127.0.0.0/8",),
        concurrency=CONCURRENCY,
        route_concurrency=CONCURRENCY,
        batch_size=512,
    )
    return DeliveryWorker(store, cipher, settings, Metrics.create())


async def produce(store: Store, n: int) -> None:
    """Store ``n`` events with their deliveries, 500 per transaction (a busy source)."""
    for start in range(0, n, 500):
        batch = [
            Event("messageNew", "acct", {"n": i}, now_ms())
            for i in range(start, min(n, start + 500))
        ]
        async with store.write() as conn:
            await events_store.record(conn, batch, default_service_url="https://relay.example.com")


async def durable(store: Store, stats: str, n: int, base: int) -> float:
    """Store ``n`` events while the running worker delivers them; the rate from the first
    batch stored to the last delivery received."""
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        await produce(store, n)
        finished = await _wait_accepted(http, stats, base + n)
    return n / (finished - started)


async def drain(store: Store, cipher: Cipher, stats: str, n: int, base: int) -> float:
    """Store ``n`` events with no worker running, then start one: the rate from its start to
    the last delivery received (the delivery path alone, without a producer beside it)."""
    await produce(store, n)
    worker = _worker(store, cipher)
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        await worker.start()
        finished = await _wait_accepted(http, stats, base + n)
    await worker.stop(10)
    return n / (finished - started)


async def latencies(store: Store) -> list[int]:
    """Event stored -> delivery recorded, in ms, of every delivery."""
    async with store.read() as conn:
        rows = await conn.execute(select(deliveries.c.created_ms, deliveries.c.delivered_ms))
        return sorted(int(d) - int(c) for c, d in rows.all() if d is not None)


async def rounds(
    store: Store, cipher: Cipher, url: str, stats: str, secret: str, n: int, count: int
) -> dict[str, float]:
    """``count`` rounds of the bare loop, the durable path with its producer, and the
    durable path draining a stored backlog, ``n`` events each.

    This machine's speed drifts by a quarter from one run to the next (other work on the
    two cores); pairing each durable run with a bare one just before it and taking the
    median of the pairs' ratios compares the two under the same conditions.
    """
    bare_rates: list[float] = []
    durable_rates: list[float] = []
    drain_rates: list[float] = []
    sent = 0
    for _ in range(count):
        bare_rates.append(await bare(url, stats, secret, n, sent))
        sent += n
        worker = _worker(store, cipher)
        await worker.start()
        try:
            durable_rates.append(await durable(store, stats, n, sent))
        finally:
            await worker.stop(10)
        sent += n
        drain_rates.append(await drain(store, cipher, stats, n, sent))
        sent += n
        print(
            f"round {len(bare_rates)}: bare {bare_rates[-1]:.0f}/s, durable "
            f"{durable_rates[-1]:.0f}/s, drain {drain_rates[-1]:.0f}/s",
            file=sys.stderr,
        )
    found = await latencies(store)

    def ratios(rates: list[float]) -> list[float]:
        return sorted(r / b for r, b in zip(rates, bare_rates, strict=True))

    durable_ratios = ratios(durable_rates)
    return {
        "durable_per_s": statistics.median(durable_rates),
        "bare_per_s": statistics.median(bare_rates),
        "ratio": statistics.median(durable_ratios),
        "ratio_min": durable_ratios[0],
        "ratio_max": durable_ratios[-1],
        "drain_per_s": statistics.median(drain_rates),
        "drain_ratio": statistics.median(ratios(drain_rates)),
        "p50_ms": float(found[len(found) // 2]),
        "p99_ms": float(found[max(0, int(len(found) * 0.99) - 1)]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5)
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
        result = await rounds(store, cipher, url, stats, secret, args.events, args.rounds)
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
                "bare_per_s": round(result["bare_per_s"]),
                "ratio": round(result["ratio"], 2),
                "ratio_range": [round(result["ratio_min"], 2), round(result["ratio_max"], 2)],
                "drain_per_s": round(result["drain_per_s"]),
                "drain_ratio": round(result["drain_ratio"], 2),
                "p50_ms": result["p50_ms"],
                "p99_ms": result["p99_ms"],
                "engine": args.engine,
                "events": args.events,
                "rounds": args.rounds,
                "goals": {
                    "ratio": GOALS[args.engine],
                    "met": result["ratio"] >= GOALS[args.engine],
                },
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
