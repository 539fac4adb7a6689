"""The cost of a token's grant checks and restrictions on an authorised read.

    python bench/auth.py [--requests 2000] [--concurrency 16] [--rounds 10]

Starts a ``relay serve`` process (SQLite store; no listeners, no delivery or send workers, so
only the API runs), adds a password account through the API and mints, through
``POST /v1/tokens``, a token bound to that account with restrictions: an address range
(``127.0.0.0/8``) and a rate limit high enough never to refuse (``--requests`` x 1000 per
second). Then ``GET /v1/account/{id}`` is sent ``--requests`` times at ``--concurrency`` over
one keep-alive aiohttp session with each token, alternating: the bound, restricted token, then
the configured full token (no account, no permissions map, no restrictions). Both go through
the same authentication middleware: the full token skips the account binding, the address,
referrer and rate-limit checks, so the difference is what those checks cost. ``--rounds``
pairs of rounds, back to back in alternating order; ``checks_cost_pct`` is the median over
the pairs of how much slower the restricted token's round was than the full token's (goal
<= 5; on a shared machine one round can swing by more than that, a pair's two rounds much
less). ``best_cost_pct`` compares the best round of each side. Every response must be 200,
with ``RateLimit-*`` headers on the restricted side only.

Prints one JSON line: ``{requests, concurrency, rounds, restricted_rps, full_rps,
checks_cost_pct, best_cost_pct, pair_costs_pct, restricted_rounds_rps, full_rounds_rps,
engine, goals}`` (``*_rps``: the best round of each side).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "a" * 40
ACCOUNT = "bench"
GOAL_CHECKS_COST_PCT = 5.0

PASSWORD_ACCOUNT = {
    "account": ACCOUNT,
    "name": "Bench",
    "email": "bench@example.com",
    "imap": {
        "host": "127.0.0.1",
        "port": 1143,
        "secure": False,
        "auth": {"user": "bench@example.com", "pass": "bench-password"},
    },
}


async def post(session: aiohttp.ClientSession, url: str, body: Any, token: str) -> Any:
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        payload = await resp.json()
        if resp.status not in (200, 201):
            raise RuntimeError(f"POST {url}: {resp.status} {payload}")
        return payload


async def round_rps(
    session: aiohttp.ClientSession, url: str, token: str, requests: int, concurrency: int
) -> float:
    """Requests per second of ``requests`` GETs of ``url``, ``concurrency`` at a time."""
    headers = {"Authorization": f"Bearer {token}"}
    restricted = token != TOKEN
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status} {await resp.text()}")
                if ("RateLimit-Limit" in resp.headers) != restricted:
                    raise RuntimeError(f"unexpected RateLimit headers: {dict(resp.headers)}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def measure(relay: RelayProcess, args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await post(session, f"{relay.url}/v1/account", PASSWORD_ACCOUNT, TOKEN)
        minted = await post(
            session,
            f"{relay.url}/v1/tokens",
            {
                "description": "bench: bound and restricted",
                "account": ACCOUNT,
                "restrictions": {
                    "addresses": ["127.0.0.0/8"],
                    "rateLimit": {"maxRequests": args.requests * 1000, "timeWindow": 1},
                },
            },
            TOKEN,
        )
        restricted_token = str(minted["token"])
        url = f"{relay.url}/v1/account/{ACCOUNT}"
        # Warm-up: connections, caches of both tokens.
        for token in (restricted_token, TOKEN):
            await round_rps(session, url, token, args.concurrency * 20, args.concurrency)
        restricted: list[float] = []
        full: list[float] = []
        for n in range(args.rounds):
            # Each pair runs back to back, in alternating order, so drift in the machine's
            # load falls on both sides.
            order = [(restricted, restricted_token), (full, TOKEN)]
            for figures, token in order if n % 2 == 0 else reversed(order):
                figures.append(
                    await round_rps(session, url, token, args.requests, args.concurrency)
                )
    pair_costs = [(f - r) / f * 100 for r, f in zip(restricted, full, strict=True)]
    cost = statistics.median(pair_costs)
    best_restricted, best_full = max(restricted), max(full)
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "restricted_rps": round(best_restricted, 1),
        "full_rps": round(best_full, 1),
        "checks_cost_pct": round(cost, 2),
        "best_cost_pct": round((best_full - best_restricted) / best_full * 100, 2),
        "pair_costs_pct": [round(c, 2) for c in pair_costs],
        "restricted_rounds_rps": [round(r, 1) for r in restricted],
        "full_rounds_rps": [round(r, 1) for r in full],
        "engine": "sqlite",
        "goals": {"checks_cost_pct": cost <= GOAL_CHECKS_COST_PCT},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = relay_env(
            Path(workdir),
            port,
            {
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": "bench-secret-for-credentials",
                "RELAY_IMAP_WATCH": "false",
                "RELAY_WEBHOOKS_DELIVER": "false",
                "RELAY_SEND_DELIVER": "false",
                "RELAY_LOG_LEVEL": "warning",
            },
        )
        relay = RelayProcess(Path(workdir), port, env)
        relay.start()
        try:
            result = asyncio.run(measure(relay, args))
        finally:
            relay.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
