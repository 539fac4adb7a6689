"""Graph notifications: how fast ``/graph/notify`` accepts them, and mail -> webhook latency.

Runs ``relay serve`` (SQLite) in its own process, as deployed; the sandbox, the load
generator and a verifying webhook receiver share this one. An account is created through
the consent flow and subscribed. Then:

1. ``/graph/notify`` gets ``--rate`` valid notifications per second for ``--seconds``
   while ``--mail-rate`` messages per second arrive in the mailbox
   (each one persisted before its 202, and each one makes the account's watcher catch up
   with delta, so catch-ups run all along); a bare aiohttp handler in a process of its own
   that only answers 202 gets the same load in the same run, as the baseline.
2. ``--messages`` messages are delivered one at a time through the sandbox; each is timed
   from delivery to the signed ``messageNew`` at the receiver.

Prints one JSON line: ``{offered_per_s, accepted_per_s, p50_ms, p99_ms, bare_p50_ms,
bare_p99_ms, mail_during_load (webhooks received for it), delivery_p50_ms,
delivery_p99_ms, ...}``.

    python bench/graph_notify.py [--rate 500] [--seconds 5] [--messages 20] [--mail-rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.sandbox.server import start_sandbox  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402
from tests.sandbox.graph_helpers import consent_graph_account  # noqa: E402

TOKEN = "bench-token-" + "0" * 32
MAIN = "main@example.com"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def _load(
    http: aiohttp.ClientSession, url: str, body: bytes, rate: int, seconds: float
) -> tuple[list[float], int, float]:
    """POST ``body`` at ``rate``/s for ``seconds``: latencies, 2xx count, wall time."""
    latencies: list[float] = []
    ok = 0

    async def one() -> None:
        nonlocal ok
        began = time.perf_counter()
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            await r.read()
            if 200 <= r.status < 300:
                ok += 1
        latencies.append(time.perf_counter() - began)

    tasks = []
    start = time.perf_counter()
    async for _ in _paced(rate, seconds):
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, ok, time.perf_counter() - start


async def _paced(rate: int, seconds: float) -> AsyncIterator[int]:
    """Yield 0, 1, ... at ``rate`` per second for ``seconds`` (on schedule, not after work)."""
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield n


_BARE = """
import sys
from aiohttp import web

async def handler(request):
    await request.read()
    return web.Response(status=202)

app = web.Application()
app.router.add_post("/graph/notify", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def _bare(port: int) -> asyncio.subprocess.Process:
    """The baseline: an aiohttp server that answers 202, in a process of its own."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _BARE, str(port))
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.post(f"http://127.0.0.1:{port}/graph/notify", data=b"{}"):
                    return proc
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise RuntimeError("the baseline server did not start")


async def _mail(http: aiohttp.ClientSession, sandbox_url: str, rate: int, seconds: float) -> int:
    """Deliver ``rate`` messages per second into the inbox for ``seconds``; how many."""
    total = 0
    async for n in _paced(rate, seconds):
        await http.post(
            f"{sandbox_url}/sandbox/mailboxes/{MAIN}/messages",
            json={"folder": "inbox", "from": "a@example.net", "to": [MAIN], "subject": f"l{n}"},
        )
        total += 1
    return total


async def main(rate: int, seconds: float, messages: int, mail_rate: int) -> dict[str, Any]:
    """Run both measurements; the result line."""
    work = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    sandbox = await start_sandbox("127.0.0.1", 0, work / "sandbox", seed=True)
    assert sandbox.seed is not None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = relay_env(
        work,
        port,
        {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "bench-secret-for-credentials",
            "RELAY_SERVER_SERVICE_URL": base,
            "RELAY_LOG_LEVEL": "warning",
            "RELAY_MICROSOFT_GRAPH_URL": sandbox.url,
            "RELAY_MICROSOFT_AUTHORITY_HOST": sandbox.url,
            "RELAY_MICROSOFT_CA_BUNDLE": str(sandbox.ca_path),
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            "RELAY_GRAPH_POLL_INTERVAL": "600",
        },
    )
    relay = RelayProcess(work, port, env)
    await asyncio.to_thread(relay.start)
    bare_port = free_port()
    bare = await _bare(bare_port)
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(sandbox.ca_path))
    connector = aiohttp.TCPConnector(ssl=context, limit=0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rx = Receiver(secret="whsec_" + "A" * 44, keep=True)
    await rx.start()
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            await http.post(
                f"{sandbox.url}/sandbox/settings", json={"allowHttpNotifications": True}
            )
            async with http.post(
                f"{base}/v1/webhooks", json={"url": rx.url, "events": ["messageNew"]}, headers=auth
            ) as r:
                rx.secret = (await r.json())["secret"]
            async with aiohttp.ClientSession(base, headers=auth) as api:
                await consent_graph_account(api, http, sandbox, "main")
            sub: dict[str, Any] | None = None
            while sub is None:
                await asyncio.sleep(0.1)
                async with http.get(f"{sandbox.url}/sandbox/subscriptions") as r:
                    subs = await r.json()
                sub = subs[0] if subs else None
            note = {
                "value": [
                    {
                        "subscriptionId": sub["id"],
                        "clientState": sub["clientState"],
                        "changeType": "updated",
                        "resource": sub["resource"],
                        "tenantId": sandbox.seed.tenant_id,
                    }
                ]
            }
            body = json.dumps(note).encode()
            bare_lat, _, _ = await _load(
                http, f"http://127.0.0.1:{bare_port}/graph/notify", body, rate, seconds
            )
            # Real mail arrives during the load too: its notifications, catch-ups, events
            # and webhooks compete with the notification endpoint.
            arriving = asyncio.create_task(_mail(http, sandbox.url, mail_rate, seconds))
            lat, ok, wall = await _load(http, f"{base}/graph/notify", body, rate, seconds)
            mailed = await arriving
            await rx.wait_for(mailed, timeout=60.0)
            during = len(rx.requests)

            delivery: list[float] = []
            for n in range(messages):
                before = len(rx.requests)
                began = time.perf_counter()
                await http.post(
                    f"{sandbox.url}/sandbox/mailboxes/{MAIN}/messages",
                    json={
                        "folder": "inbox",
                        "from": "a@example.net",
                        "to": [MAIN],
                        "subject": f"bench {n}",
                    },
                )
                await rx.wait_for(before + 1, timeout=30.0)
                delivery.append(time.perf_counter() - began)
            verified = all(d.verified for d in rx.requests)
    finally:
        await rx.stop()
        bare.terminate()
        await bare.wait()
        await asyncio.to_thread(relay.stop)
        await sandbox.close()
    return {
        "bench": "graph_notify",
        "offered_per_s": rate,
        "seconds": seconds,
        "accepted": ok,
        "accepted_per_s": round(ok / wall, 1),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "bare_p50_ms": _pct(bare_lat, 0.5),
        "bare_p99_ms": _pct(bare_lat, 0.99),
        "mail_during_load": during,
        "messages": messages,
        "delivery_p50_ms": round(statistics.median(delivery) * 1000, 1),
        "delivery_p99_ms": _pct(delivery, 0.99),
        "signatures_verified": verified,
        "engine": "sqlite",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--mail-rate", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rate, args.seconds, args.messages, args.mail_rate))))
