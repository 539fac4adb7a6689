"""kill -9 in the middle of delivering: after a restart every event still arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from relay.config import StoreSettings
from relay.events.model import Event
from relay.store import Store
from relay.store import events as events_store
from relay.store.engine import now_ms
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env
from tests.webhooks.conftest import SERVICE_SECRET

TOKEN = "crash-" + "c" * 40
EVENTS = 5000


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill_9_mid_delivery_loses_nothing(tmp_path: Path, store_url: str) -> None:
    """5,000 events, SIGKILL once some were delivered, restart: every event id is received."""
    port = free_port()
    extra = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_SECRET": "crash-test-secret-value",
        "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RELAY_WEBHOOKS_TIMEOUT": "2",
        "RELAY_WEBHOOKS_LEASE": "3",
        "RELAY_WEBHOOKS_POLL_INTERVAL": "0.1",
        "RELAY_LOG_LEVEL": "warning",
    }
    extra["RELAY_STORE_URL"] = store_url
    env = relay_env(tmp_path, port, extra)
    relay = RelayProcess(tmp_path, port, env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with Receiver(
        secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET, keep=False
    ) as rx:
        await asyncio.to_thread(relay.start)
        try:
            async with aiohttp.ClientSession(relay.url, headers=headers) as http:
                async with http.post("/v1/settings", json={"serviceSecret": SERVICE_SECRET}) as r:
                    assert r.status == 200
                async with http.post("/v1/webhooks", json={"url": rx.url}) as r:
                    assert r.status == 201
                    rx.secret = (await r.json())["secret"]
            store = Store.open(StoreSettings(url=env["RELAY_STORE_URL"]))
            batch = [Event("messageNew", "acct", {"n": i}, now_ms()) for i in range(EVENTS)]
            try:
                async with store.write() as conn:
                    await events_store.record(conn, batch, default_service_url=relay.url)
            finally:
                await store.close()
            await rx.wait_for(EVENTS // 5, timeout=60)
            await asyncio.to_thread(relay.kill)
            assert len(set(rx.ids())) < EVENTS, "killed too late to prove anything"
            await asyncio.to_thread(relay.start)
            # wait_for counts every acceptance (repeats too); wait for all distinct ids.
            async with asyncio.timeout(120):
                while len(set(rx.ids())) < EVENTS:
                    await rx.wait_for(rx.accepted_count + 1, timeout=None)
        finally:
            await asyncio.to_thread(relay.stop)
    missing = {e.id for e in batch} - set(rx.ids())
    assert not missing, f"{len(missing)} events never arrived"
