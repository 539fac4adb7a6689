"""Graph notifications: how fast ``/graph/notify`` accepts them, and mail -> webhook latency.

Runs the sandbox, a relay (SQLite) and a verifying webhook receiver in this process. An
account is created through the consent flow and subscribed. Then:

1. ``/graph/notify`` gets ``--rate`` valid notifications per second for ``--seconds``
   (each one persisted before its 202); a bare aiohttp handler that only answers 202 gets
   the same load in the same run, as the baseline.
2. ``--messages`` messages are delivered one at a time through the sandbox; each is timed
   from delivery to the signed ``messageNew`` at the receiver.

Prints one JSON line: ``{offered_per_s, accepted_per_s, p50_ms, p99_ms, bare_p50_ms,
bare_p99_ms, delivery_p50_ms, delivery_p99_ms, ...}``.

    python bench/graph_notify.py [--rate 500] [--seconds 5] [--messages 20]
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
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.app import create_app  # noqa: E402
from relay.config import (  # noqa: E402
    GraphSettings,
    ImapSettings,
    LogSettings,
    MicrosoftSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    StoreSettings,
    WebhookSettings,
)
from relay.log import configure as configure_logging  # noqa: E402
from relay.sandbox.browser import sign_in  # noqa: E402
from relay.sandbox.server import start_sandbox  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.proc import free_port  # noqa: E402

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
    total = int(rate * seconds)
    start = time.perf_counter()
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, ok, time.perf_counter() - start


async def _bare(port: int) -> web.AppRunner:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/graph/notify", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def main(rate: int, seconds: float, messages: int) -> dict[str, Any]:
    """Run both measurements; the result line."""
    work = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    sandbox = await start_sandbox("127.0.0.1", 0, work / "sandbox", seed=True)
    assert sandbox.seed is not None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=port, service_url=base),
        store=StoreSettings(url=f"sqlite:///{work / 'relay.db'}"),
        security=SecuritySettings(
            api_token=TOKEN, secret="bench-secret-for-credentials", key_file=str(work / "k")
        ),
        log=LogSettings(level="warning", format="json"),
        microsoft=MicrosoftSettings(
            graph_url=sandbox.url, authority_host=sandbox.url, ca_bundle=str(sandbox.ca_path)
        ),
        webhooks=WebhookSettings(allow_networks=("127.0.0.0/8",), poll_interval=0.05),
        imap=ImapSettings(),
        graph=GraphSettings(poll_interval=600.0),
    )
    configure_logging(settings.log)
    runner = web.AppRunner(create_app(settings, base_dir=work), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
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
            seed = sandbox.seed
            async with http.post(
                f"{base}/v1/oauth2",
                headers=auth,
                json={
                    "name": "Sandbox",
                    "provider": "outlook",
                    "clientId": seed.client_id,
                    "clientSecret": seed.client_secret,
                    "authority": seed.tenant_id,
                    "redirectUrl": seed.redirect_uri,
                    "baseScopes": "api",
                },
            ) as r:
                app_id = (await r.json())["id"]
            async with http.post(
                f"{base}/v1/authentication/form",
                headers=auth,
                json={
                    "account": "main",
                    "name": "Main",
                    "type": app_id,
                    "redirectUrl": "https://app.example.com/done",
                },
            ) as r:
                link = (await r.json())["url"]
            async with http.get(link, allow_redirects=False, headers={"Accept": "text/html"}) as r:
                auth_uri = r.headers["Location"]
            answer = await sign_in(http, auth_uri, MAIN, "sandbox-password")
            async with http.post(f"{base}/oauth", data=answer, allow_redirects=False) as r:
                assert r.status == 302, await r.text()
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
                        "tenantId": seed.tenant_id,
                    }
                ]
            }
            body = json.dumps(note).encode()
            bare_lat, _, _ = await _load(
                http, f"http://127.0.0.1:{bare_port}/graph/notify", body, rate, seconds
            )
            lat, ok, wall = await _load(http, f"{base}/graph/notify", body, rate, seconds)
            await asyncio.sleep(1.0)

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
        await bare.cleanup()
        await runner.cleanup()
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
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rate, args.seconds, args.messages))))
