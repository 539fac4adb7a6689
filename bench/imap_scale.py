"""Many mailboxes, one relay: memory per watched mailbox, time to connect all, push latency.

    python bench/imap_scale.py [--mailboxes 2000] [--pushes 200]

Starts a tuned Dovecot (TLS, see TEST-PEERS.md) with one user per mailbox and a
``relay serve`` process (uvloop when installed, SQLite store) that trusts the Dovecot CA.
Then:

1. measures the relay's RSS with no accounts (the baseline);
2. adds ``--mailboxes`` password accounts through the API (TLS on the imaps port) and waits
   until all are ``connected``;
3. restarts the relay and times from process start until every account is ``connected``
   again (``connect_s``: boot with a full accounts table, the case that matters);
4. measures RSS once settled: ``kib_per_mailbox`` is (RSS - baseline) / mailboxes, so it
   counts the TLS connection, the listener and its folder state, everything per mailbox;
5. APPENDs one message to each of ``--pushes`` random mailboxes, ``--rate`` per second (from
   connections logged in beforehand), and measures APPEND -> signed ``messageNew`` webhook
   accepted by an in-process verifying receiver.

Prints one JSON line: ``{mailboxes, rss_mib, kib_per_mailbox, connect_s, push_p99_ms, ...}``;
``add_s`` is how long adding the accounts through the API took until all were connected, and
``event_to_webhook_p99_ms`` the part of the push latency spent in the relay after the change
was seen (the rest is Dovecot's ~500 ms notification delay and the fetch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.imap import ImapClient  # noqa: E402
from tests.peers.dovecot import DovecotServer, dovecot_server  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "s" * 40
PASSWORD = "secret"
SERVICE_SECRET = "bench-service-secret"
CONCURRENCY = 20


def user(n: int) -> str:
    return f"box{n}@example.com"


def rss_kib(pid: int) -> int:
    """VmRSS of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


async def api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        payload = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        return payload


async def connected(http: aiohttp.ClientSession, relay: RelayProcess) -> int:
    """How many accounts are connected (0 while the relay is not answering yet)."""
    try:
        page = await api(http, "GET", f"{relay.url}/v1/accounts?state=connected&pageSize=1")
    except (aiohttp.ClientError, RuntimeError):
        return 0
    return int(page["total"])


async def wait_connected(
    http: aiohttp.ClientSession, relay: RelayProcess, count: int, limit: float
) -> float:
    """Seconds until ``count`` accounts are connected."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while True:
            if await connected(http, relay) >= count:
                break
            await asyncio.sleep(0.1)
    return time.monotonic() - started


async def add_accounts(
    http: aiohttp.ClientSession, relay: RelayProcess, server: DovecotServer, count: int
) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def add(n: int) -> None:
        async with limit:
            await api(
                http,
                "POST",
                f"{relay.url}/v1/account",
                {
                    "account": f"box{n}",
                    "name": f"box{n}",
                    "email": user(n),
                    "imap": {
                        "host": server.host,
                        "port": server.tls_port,
                        "secure": True,
                        "auth": {"user": user(n), "pass": PASSWORD},
                    },
                },
            )

    await asyncio.gather(*(add(n) for n in range(count)))


async def push(
    server: DovecotServer, rx: Receiver, sample: list[int], rate: float
) -> tuple[list[float], list[float]]:
    """APPEND one message to each sampled mailbox, ``rate`` per second, from other
    connections. Returns the latencies (ms) APPEND -> webhook accepted, and event stored ->
    webhook accepted (the envelope's ``date`` is when the relay made the event)."""
    started: dict[str, float] = {}
    clients: dict[int, ImapClient] = {}

    async def login(n: int) -> None:
        client = await ImapClient.connect(server.host, server.port)
        await client.login(user(n), PASSWORD)
        clients[n] = client

    # Log in first, so that only the APPENDs themselves run at the measured rate.
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(n: int) -> None:
        async with limit:
            await login(n)

    await asyncio.gather(*(bounded(n) for n in sample))

    async def one(n: int, delay: float) -> None:
        await asyncio.sleep(delay)
        message_id = f"<push-{n}@bench>"
        body = f"Subject: push {n}\r\nMessage-ID: {message_id}\r\n\r\nx\r\n".encode()
        started[message_id] = time.time()
        await clients[n].append("INBOX", body)

    base = rx.accepted_count
    await asyncio.gather(*(one(n, i / rate) for i, n in enumerate(sample)))
    await rx.wait_for(base + len(sample), timeout=60)
    for client in clients.values():
        await client.logout()
    latencies: list[float] = []
    deliveries: list[float] = []
    for delivery in rx.accepted():
        body = delivery.json()
        if body.get("event") != "messageNew":
            continue
        message_id = body["data"].get("messageId")
        if message_id in started:
            latencies.append((delivery.received_at - started[message_id]) * 1000)
            created = datetime.fromisoformat(body["date"]).timestamp()
            deliveries.append((delivery.received_at - created) * 1000)
    return latencies, deliveries


async def run(
    server: DovecotServer, workdir: Path, ca_file: str, mailboxes: int, pushes: int, rate: float
) -> dict[str, Any]:
    port = free_port()
    env = relay_env(
        workdir,
        port,
        {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "bench-secret-for-credentials",
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            "RELAY_LOG_LEVEL": "warning",
            "RELAY_IMAP_CA_BUNDLE": ca_file,
        },
    )
    relay = RelayProcess(workdir, port, env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
        Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET, keep=True) as rx,
    ):
        await asyncio.to_thread(relay.start)
        try:
            await api(http, "POST", f"{relay.url}/v1/settings", {"serviceSecret": SERVICE_SECRET})
            route = await api(
                http, "POST", f"{relay.url}/v1/webhooks", {"url": rx.url, "events": ["messageNew"]}
            )
            rx.secret = route["secret"]
            await asyncio.sleep(1)
            assert relay.proc is not None
            baseline = rss_kib(relay.proc.pid)
            added = time.monotonic()
            await add_accounts(http, relay, server, mailboxes)
            await wait_connected(http, relay, mailboxes, 300)
            add_s = time.monotonic() - added
        finally:
            await asyncio.to_thread(relay.stop)

        booted = time.monotonic()
        await asyncio.to_thread(relay.start, wait=False)
        try:
            await wait_connected(http, relay, mailboxes, 300)
            connect_s = time.monotonic() - booted
            await asyncio.sleep(3)
            assert relay.proc is not None
            rss = rss_kib(relay.proc.pid)
            sample = random.Random(7).sample(range(mailboxes), min(pushes, mailboxes))
            latencies, deliveries = await push(server, rx, sample, rate)
        finally:
            await asyncio.to_thread(relay.stop)
    return {
        "mailboxes": mailboxes,
        "rss_mib": round(rss / 1024, 1),
        "baseline_rss_mib": round(baseline / 1024, 1),
        "kib_per_mailbox": round((rss - baseline) / mailboxes, 1),
        "connect_s": round(connect_s, 2),
        "add_s": round(add_s, 2),
        "pushes": len(latencies),
        "push_rate_per_s": rate,
        "push_p50_ms": round(percentile(latencies, 50), 1),
        "push_p99_ms": round(percentile(latencies, 99), 1),
        "event_to_webhook_p99_ms": round(percentile(deliveries, 99), 1),
    }


def main() -> None:
    """Start Dovecot and the relay, measure, stop both, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=2000)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="pushes per second")
    args = parser.parse_args()
    # One socket per mailbox in the relay and the Dovecot processes (children inherit).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    users = {user(n): PASSWORD for n in range(args.mailboxes)}
    with (
        dovecot_server(tls=True, tuned=True, users=users) as server,
        tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir,
    ):
        ca_file = str(Path(workdir) / "dovecot-ca.pem")
        ca = server._ca
        assert ca is not None
        ca.cert_pem.write_to_path(ca_file)  # type: ignore[attr-defined]
        result = asyncio.run(
            run(server, Path(workdir), ca_file, args.mailboxes, args.pushes, args.rate)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
