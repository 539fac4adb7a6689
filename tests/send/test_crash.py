"""kill -9 with messages queued and in flight: after a restart every message is sent."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.peers.smtp import SmtpPeer
from tests.proc import RelayProcess, free_port, relay_env

from .conftest import ME, PASSWORD

TOKEN = "crash-" + "s" * 40
MESSAGES = 200
CONCURRENCY = 4


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill_9_mid_sending_sends_everything(tmp_path: Path, store_url: str) -> None:
    """200 queued messages, SIGKILL after some were sent, restart: each is sent; only those in
    flight at the kill may go twice."""
    # Slow enough that the 200 submits are all queued long before the last one is sent.
    smtp = await SmtpPeer(passwords={ME: PASSWORD}, delay=0.2).start()
    port = free_port()
    env = relay_env(
        tmp_path,
        port,
        {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "crash-test-secret-value",
            "RELAY_STORE_URL": store_url,
            "RELAY_SEND_CONCURRENCY": str(CONCURRENCY),
            "RELAY_SEND_TIMEOUT": "2",
            "RELAY_SEND_LEASE": "3",
            "RELAY_SEND_POLL_INTERVAL": "0.1",
            "RELAY_SEND_RETRY_MIN": "0.2",
            "RELAY_IMAP_WATCH": "false",
            "RELAY_LOG_LEVEL": "warning",
        },
    )
    relay = RelayProcess(tmp_path, port, env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    await asyncio.to_thread(relay.start)
    try:
        async with aiohttp.ClientSession(relay.url, headers=headers) as http:
            account = {
                "account": "acct",
                "name": "Me",
                "email": ME,
                "imap": {"host": "127.0.0.1", "port": 1, "auth": {"user": ME, "pass": "x"}},
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "secure": False,
                    "auth": {"user": ME, "pass": PASSWORD},
                },
            }
            async with http.post("/v1/account", json=account) as r:
                assert r.status == 200, await r.text()
            ids = []
            for i in range(MESSAGES):
                body = {"to": [{"address": "rita@example.net"}], "subject": f"n{i}", "text": "x"}
                async with http.post("/v1/account/acct/submit", json=body) as r:
                    assert r.status == 200, await r.text()
                    ids.append((await r.json())["messageId"])
        await smtp.wait_for(MESSAGES // 5, seconds=60)
        await asyncio.to_thread(relay.kill)
        before = len(smtp.received)
        assert before < MESSAGES, "killed too late to prove anything"
        await asyncio.to_thread(relay.start)
        async with asyncio.timeout(120):
            while set(ids) - {m.message_id for m in smtp.received}:
                await smtp.wait_for(len(smtp.received) + 1, seconds=None)
    finally:
        await asyncio.to_thread(relay.stop)
        await smtp.stop()
    counts = Counter(m.message_id for m in smtp.received)
    assert set(counts) == set(ids)
    twice = [m for m, n in counts.items() if n > 1]
    assert len(twice) <= CONCURRENCY, twice
