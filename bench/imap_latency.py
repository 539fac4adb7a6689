"""Push latency: APPEND -> signed messageNew webhook received, against a bare IDLE client.

    python bench/imap_latency.py [--messages 60]

Starts a Dovecot, a ``relay serve`` process (its own SQLite store), and an in-process
verifying webhook receiver with a route for ``messageNew``. A bare IDLE client (no store, no
webhook) watches the same INBOX. Each message is APPENDed from a third connection; its
latency is the time from just before the APPEND to (a) the receiver accepting the relay's
webhook and (b) the bare client seeing EXISTS. Dovecot itself delays change notifications by
about 500 ms, so only the difference means anything. Prints one JSON line:
``{relay_p50_ms, relay_p99_ms, bare_p50_ms, bare_p99_ms, overhead_p50_ms, overhead_p99_ms}``
where overhead is relay minus bare for the same message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.imap import Exists, ImapClient  # noqa: E402
from tests.peers.dovecot import DovecotServer, dovecot_server  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

USER, PASSWORD = "latency@example.com", "secret"
TOKEN = "bench-" + "b" * 40
SERVICE_SECRET = "bench-service-secret"
WARMUP = 3


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        payload = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        return payload


async def bare_loop(bare: ImapClient, arrived: asyncio.Event) -> None:
    """What any client must do to read new mail: on EXISTS, DONE, FETCH it, IDLE again."""
    while True:
        await arrived.wait()
        arrived.clear()
        await bare.idle_done()
        await bare.uid_fetch("*", ["UID", "FLAGS", "ENVELOPE"])
        await bare.idle_start()


async def run(server: DovecotServer, relay: RelayProcess, messages: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET, keep=True) as rx,
    ):
        await api(http, "POST", f"{relay.url}/v1/settings", {"serviceSecret": SERVICE_SECRET})
        route = await api(
            http, "POST", f"{relay.url}/v1/webhooks", {"url": rx.url, "events": ["messageNew"]}
        )
        rx.secret = route["secret"]
        await api(
            http,
            "POST",
            f"{relay.url}/v1/account",
            {
                "account": "latency",
                "name": "latency",
                "email": USER,
                "imap": {
                    "host": server.host,
                    "port": server.port,
                    "secure": False,
                    "auth": {"user": USER, "pass": PASSWORD},
                },
            },
        )
        async with asyncio.timeout(30):
            while True:
                view = await api(http, "GET", f"{relay.url}/v1/account/latency")
                if view["state"] == "connected":
                    break
                await asyncio.sleep(0.05)

        seen: asyncio.Queue[float] = asyncio.Queue()
        arrived = asyncio.Event()

        def on_update(update: object) -> None:
            if isinstance(update, Exists):
                seen.put_nowait(time.time())
                arrived.set()

        bare = await ImapClient.connect(server.host, server.port, on_update=on_update)
        await bare.login(USER, PASSWORD)
        await bare.select("INBOX")
        await bare.idle_start()
        bare_task = asyncio.create_task(bare_loop(bare, arrived))
        writer = await ImapClient.connect(server.host, server.port)
        await writer.login(USER, PASSWORD)

        relay_ms: list[float] = []
        bare_ms: list[float] = []
        for n in range(messages + WARMUP):
            body = f"Subject: latency {n}\r\nMessage-ID: <lat-{n}@bench>\r\n\r\nx\r\n".encode()
            started = time.time()
            await writer.append("INBOX", body)
            async with asyncio.timeout(30):
                seen_at = await seen.get()
                await rx.wait_for(n + 1, timeout=30)
            delivery = rx.accepted()[n]
            if n >= WARMUP:
                relay_ms.append((delivery.received_at - started) * 1000)
                bare_ms.append((seen_at - started) * 1000)
            # Both sides quiet again before the next message.
            await asyncio.sleep(0.05)
        bare_task.cancel()
        await asyncio.gather(bare_task, return_exceptions=True)
        bare.close()
        await writer.logout()
    overhead = [r - b for r, b in zip(relay_ms, bare_ms, strict=True)]
    return {
        "messages": messages,
        "relay_p50_ms": round(percentile(relay_ms, 50), 1),
        "relay_p99_ms": round(percentile(relay_ms, 99), 1),
        "bare_p50_ms": round(percentile(bare_ms, 50), 1),
        "bare_p99_ms": round(percentile(bare_ms, 99), 1),
        "overhead_p50_ms": round(percentile(overhead, 50), 1),
        "overhead_p99_ms": round(percentile(overhead, 99), 1),
    }


def main() -> None:
    """Start Dovecot and the relay, measure, stop both, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    args = parser.parse_args()
    with (
        dovecot_server(users={USER: PASSWORD}) as server,
        tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir,
    ):
        port = free_port()
        env = relay_env(
            Path(workdir),
            port,
            {
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": "bench-secret-for-credentials",
                "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
                "RELAY_LOG_LEVEL": "warning",
            },
        )
        relay = RelayProcess(Path(workdir), port, env)
        relay.start()
        try:
            result = asyncio.run(run(server, relay, args.messages))
        finally:
            relay.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
