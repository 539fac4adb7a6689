"""kill -9 while mail arrives on a Graph account: after a restart each message is reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.sandbox.server import RunningSandbox
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env
from tests.sandbox.graph_helpers import consent_graph_account, deliver

TOKEN = "graph-crash-" + "g" * 32
MESSAGES = 60


async def _state(relay: aiohttp.ClientSession) -> Any:
    async with relay.get("/v1/account/main") as r:
        return await r.json() if r.status == 200 else None


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill_9_while_mail_arrives_loses_nothing(
    tmp_path: Path, store_url: str, sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    """Mail keeps arriving; the relay is killed (SIGKILL) mid-way and started again: every
    message reaches the receiver as messageNew (at least once; by immutable id)."""
    async with http.post(f"{sandbox.url}/sandbox/settings", json={"allowHttpNotifications": True}):
        pass
    port = free_port()
    env = relay_env(
        tmp_path,
        port,
        {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "graph-crash-secret-value",
            "RELAY_STORE_URL": store_url,
            "RELAY_SERVER_SERVICE_URL": f"http://127.0.0.1:{port}",
            "RELAY_MICROSOFT_GRAPH_URL": sandbox.url,
            "RELAY_MICROSOFT_AUTHORITY_HOST": sandbox.url,
            "RELAY_MICROSOFT_CA_BUNDLE": str(sandbox.ca_path),
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            "RELAY_GRAPH_POLL_INTERVAL": "600",
            "RELAY_GRAPH_RETRY_MIN": "0.2",
            "RELAY_LOG_LEVEL": "warning",
        },
    )
    relay = RelayProcess(tmp_path, port, env)
    rx = Receiver(secret="whsec_" + "B" * 44)
    await rx.start()
    await asyncio.to_thread(relay.start)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(relay.url, headers=headers) as api:
            hook = {"url": rx.url, "events": ["messageNew"]}
            async with api.post("/v1/webhooks", json=hook) as r:
                rx.secret = (await r.json())["secret"]
            await consent_graph_account(api, http, sandbox, "main")
            for _ in range(300):
                view = await _state(api)
                if view and view["state"] == "connected" and view.get("graph"):
                    break
                await asyncio.sleep(0.1)
            sent: list[str] = []
            for n in range(MESSAGES):
                if n == MESSAGES // 3:
                    await asyncio.to_thread(relay.kill)
                if n == 2 * MESSAGES // 3:
                    await asyncio.to_thread(relay.start)
                message = await deliver(http, sandbox, subject=f"crash {n}")
                sent.append(message["immutableId"])
                await asyncio.sleep(0.02)
        async with asyncio.timeout(120):
            while set(sent) - {d.json()["data"]["id"] for d in rx.requests}:
                await rx.wait_for(len(rx.requests) + 1, timeout=None)
        assert all(d.verified for d in rx.requests)
    finally:
        await asyncio.to_thread(relay.stop)
        await rx.stop()
