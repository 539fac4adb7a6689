"""kill -9 while mail arrives on a Graph account: after a restart each message is reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.sandbox.browser import sign_in
from relay.sandbox.server import RunningSandbox
from tests.auth.conftest import MAIN
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env
from tests.sandbox.graph_helpers import deliver

TOKEN = "graph-crash-" + "g" * 32
MESSAGES = 60


async def _consent(
    relay: aiohttp.ClientSession, browser: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Register the sandbox application (Graph) and consent as the main user."""
    seed = sandbox.seed
    assert seed is not None
    app = {
        "name": "Sandbox",
        "provider": "outlook",
        "clientId": seed.client_id,
        "clientSecret": seed.client_secret,
        "authority": seed.tenant_id,
        "redirectUrl": seed.redirect_uri,
        "baseScopes": "api",
    }
    async with relay.post("/v1/oauth2", json=app) as r:
        app_id = (await r.json())["id"]
    form = {
        "account": "main",
        "name": "Main",
        "type": app_id,
        "redirectUrl": "https://app.example/",
    }
    async with relay.post("/v1/authentication/form", json=form) as r:
        link = (await r.json())["url"]
    async with browser.get(link, allow_redirects=False, headers={"Accept": "text/html"}) as r:
        authorize = r.headers["Location"]
    answer = await sign_in(browser, authorize, MAIN, "sandbox-password")
    async with relay.post("/oauth", data=answer, allow_redirects=False) as r:
        assert r.status == 302, await r.text()


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
            await _consent(api, http, sandbox)
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
