"""``POST /v1/webhooks/{id}/test``: requests per second one at a time and concurrently.

    python bench/webhook_test.py [--requests 300] [--concurrency 32] [--engine sqlite|postgresql]

Starts a ``relay serve`` process (no listeners, no send worker: only the API and the
delivery worker run) and a fast local receiver in its own process (``tests.peers.receiver``,
which verifies both signatures and answers 204 at once). One route points at the receiver.
Then ``--requests`` test deliveries are asked for one at a time, and ``--requests`` more
``--concurrency`` at a time, over one keep-alive aiohttp session. Every answer must be 200
and name an event no other answer named; ``wrong_answers`` counts those that did not report
``status: delivered`` with ``statusCode: 204`` (goal: none).

Prints one JSON line: ``{requests, concurrency, sequential_per_s, concurrent_per_s, ratio,
wrong_answers, engine, goals}`` where ``ratio`` is concurrent over sequential (goal: at
least 5).
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
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from tests.peers.receiver import spawn as spawn_receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "b" * 40
SERVICE_SECRET = "bench-service-secret"
GOAL_RATIO = 5.0


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def run_round(
    session: aiohttp.ClientSession, url: str, requests: int, concurrency: int
) -> tuple[float, list[Any]]:
    """Requests per second of ``requests`` test deliveries, ``concurrency`` at a time, and
    the answers that did not report a delivery answered 204."""
    left = requests
    seen: set[str] = set()
    wrong: list[Any] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, out = await call(session, "POST", url)
            if status != 200:
                raise RuntimeError(f"POST {url}: {status} {out}")
            if out.get("status") != "delivered" or out.get("statusCode") != 204:
                wrong.append(out)
            if out["eventId"] in seen:
                raise RuntimeError(f"two answers about event {out['eventId']}")
            seen.add(out["eventId"])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started), wrong


async def measure(relay: RelayProcess, args: argparse.Namespace) -> dict[str, Any]:
    rx_port = free_port()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        status, out = await call(
            session, "POST", f"{relay.url}/v1/settings", {"serviceSecret": SERVICE_SECRET}
        )
        assert status == 200, out
        status, route = await call(
            session, "POST", f"{relay.url}/v1/webhooks", {"url": f"http://127.0.0.1:{rx_port}/"}
        )
        assert status == 201, route
        receiver = await spawn_receiver(rx_port, route["secret"], SERVICE_SECRET)
        try:
            url = f"{relay.url}/v1/webhooks/{route['id']}/test"
            await run_round(session, url, 20, 1)  # warm-up: connections, caches
            sequential, wrong = await run_round(session, url, args.requests, 1)
            concurrent, wrong_too = await run_round(session, url, args.requests, args.concurrency)
            wrong += wrong_too
        finally:
            receiver.send_signal(signal.SIGTERM)
            await asyncio.wait_for(receiver.wait(), 10)
    ratio = concurrent / sequential
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "sequential_per_s": round(sequential, 1),
        "concurrent_per_s": round(concurrent, 1),
        "ratio": round(ratio, 2),
        "wrong_answers": len(wrong),
        "engine": args.engine,
        "goals": {"ratio": ratio >= GOAL_RATIO, "answers": not wrong},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    dbname = f"relay_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        extra = {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "bench-secret-for-credentials",
            "RELAY_IMAP_WATCH": "false",
            "RELAY_SEND_DELIVER": "false",
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            "RELAY_LOG_LEVEL": "warning",
        }
        if args.engine == "postgresql":
            asyncio.run(pg_database(args.pg, dbname))
            extra["RELAY_STORE_URL"] = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
        relay = RelayProcess(Path(workdir), port, relay_env(Path(workdir), port, extra))
        try:
            relay.start()
            result = asyncio.run(measure(relay, args))
        finally:
            relay.stop()
            if args.engine == "postgresql":
                asyncio.run(pg_database(args.pg, dbname, drop=True))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
