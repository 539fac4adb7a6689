"""Adding IMAP accounts in bulk through ``POST /v1/account``, against the store's own floor.

    python bench/accounts.py [--accounts 2000] [--concurrency 16] [--engine sqlite|postgresql]
                             [--reconnect-min 60]

Starts a ``relay serve`` process with its IMAP supervisor on (so each new account gets its
listener started, as in production; no send worker) and adds ``--accounts`` password
accounts over one keep-alive aiohttp session, ``--concurrency`` requests at a time. Every
answer must be 200 ``{"state": "new"}``; after the run the relay must list them all.

The accounts point at 127.0.0.1 on a port nobody listens on, so every connection is refused
at once: each listener starts (lease, task, connect, ``connectError`` recorded) but costs
next to nothing on the IMAP side. A real Dovecot would add 2,000 logins, folder listings and
IDLE sessions competing for the same two cores, which measures Dovecot and the listeners
rather than the API. ``--reconnect-min`` (``imap.reconnect_min``, default here 60 s) keeps
each refused listener from retrying during the run, so what runs besides the API is each
account's start-up, once; ``--reconnect-min 1`` (the relay's default) adds the retries a
server that refuses everyone causes (one more account read per account and retry).

The baseline, measured in the same run: the same number of bare account ``INSERT``s
(one write transaction each, through :class:`relay.store.Store`, on a fresh store of the
same engine) with the same concurrency, in this process: what the store alone costs.

Prints one JSON line: ``{accounts, concurrency, seconds, per_s, baseline_seconds,
baseline_per_s, ratio, reconnect_min, engine, goals}`` where ``ratio`` is per_s over baseline_per_s
(goal: the whole run in under 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from relay.config import StoreSettings  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store import accounts as accounts_store  # noqa: E402
from relay.store.migrate import migrate  # noqa: E402
from relay.store.schema import AccountState  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "c" * 40
GOAL_SECONDS = 10.0


def account_body(n: int, imap_port: int) -> dict[str, Any]:
    return {
        "account": f"bench-{n:05d}",
        "name": f"Bench {n}",
        "email": f"bench{n}@example.com",
        "imap": {
            "host": "127.0.0.1",
            "port": imap_port,
            "secure": False,
            "auth": {"user": f"bench{n}@example.com", "pass": "bench-password"},
        },
    }


async def run_concurrently(count: int, concurrency: int, one: Any) -> float:
    """Seconds to run ``one(n)`` for n in range(count), ``concurrency`` at a time."""
    left = iter(range(count))

    async def worker() -> None:
        for n in left:
            await one(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def through_api(relay: RelayProcess, args: argparse.Namespace) -> float:
    imap_port = free_port()  # bound, then closed: connections to it are refused
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def add(n: int) -> None:
            body = account_body(n, imap_port)
            async with session.post(f"{relay.url}/v1/account", json=body) as resp:
                out = await resp.json()
                if resp.status != 200 or out.get("state") != "new":
                    raise RuntimeError(f"POST /v1/account: {resp.status} {out}")

        seconds = await run_concurrently(args.accounts, args.concurrency, add)
        async with session.get(f"{relay.url}/v1/accounts?pageSize=1") as resp:
            total = (await resp.json())["total"]
        if total != args.accounts:
            raise RuntimeError(f"{total} accounts listed, {args.accounts} added")
    return seconds


async def bare_inserts(store_url: str, args: argparse.Namespace) -> float:
    store = Store.open(StoreSettings(url=store_url))
    try:
        await migrate(store)

        async def insert(n: int) -> None:
            body = account_body(n, 1)
            async with store.write() as conn:
                await accounts_store.insert(
                    conn,
                    {
                        "id": body["account"],
                        "name": body["name"],
                        "email": body["email"],
                        "state": AccountState.INIT,
                        "backend": "imap",
                        "config": {"imap": body["imap"]},
                    },
                )

        return await run_concurrently(args.accounts, args.concurrency, insert)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--reconnect-min", type=float, default=60.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    names = [f"relay_bench_{os.getpid()}_api", f"relay_bench_{os.getpid()}_bare"]
    with tempfile.TemporaryDirectory() as workdir:
        if args.engine == "postgresql":
            base = args.pg.rsplit("/", 1)[0]
            for name in names:
                asyncio.run(pg_database(args.pg, name))
            api_url, bare_url = (f"{base}/{name}" for name in names)
        else:
            api_url = f"sqlite:///{workdir}/relay.db"
            bare_url = f"sqlite:///{workdir}/bare.db"
        port = free_port()
        env = relay_env(
            Path(workdir),
            port,
            {
                "RELAY_STORE_URL": api_url,
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": "bench-secret-for-credentials",
                "RELAY_SEND_DELIVER": "false",
                "RELAY_IMAP_RECONNECT_MIN": str(args.reconnect_min),
                "RELAY_IMAP_RECONNECT_MAX": str(max(300.0, args.reconnect_min)),
                "RELAY_LOG_LEVEL": "warning",
            },
        )
        relay = RelayProcess(Path(workdir), port, env)
        try:
            relay.start()
            seconds = asyncio.run(through_api(relay, args))
            relay.stop()
            baseline = asyncio.run(bare_inserts(bare_url, args))
        finally:
            relay.stop()
            if args.engine == "postgresql":
                for name in names:
                    asyncio.run(pg_database(args.pg, name, drop=True))
    per_s = args.accounts / seconds
    baseline_per_s = args.accounts / baseline
    print(
        json.dumps(
            {
                "accounts": args.accounts,
                "concurrency": args.concurrency,
                "seconds": round(seconds, 2),
                "per_s": round(per_s, 1),
                "baseline_seconds": round(baseline, 2),
                "baseline_per_s": round(baseline_per_s, 1),
                "ratio": round(per_s / baseline_per_s, 2),
                "reconnect_min": args.reconnect_min,
                "engine": args.engine,
                "goals": {"seconds": seconds < GOAL_SECONDS},
            }
        )
    )


if __name__ == "__main__":
    main()
