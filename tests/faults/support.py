"""What the fault tests share: a relay process watching one Dovecot account with one route."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.peers.dovecot import DovecotServer
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env
from tests.sources.imap.support import Account, message, new_account
from tests.webhooks.conftest import SERVICE_SECRET

TOKEN = "dbfault-" + "d" * 40


async def api(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, path, **kw) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def add_route(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    """Set the service secret and add a route to ``receiver`` (which learns its secret)."""
    secret = {"serviceSecret": SERVICE_SECRET}
    status, body = await api(http, "POST", "/v1/settings", json=secret)
    assert status == 200, (status, body)
    status, body = await api(http, "POST", "/v1/webhooks", json={"url": receiver.url})
    assert status == 201, body
    receiver.secret = body["secret"]


def subjects(rx: Receiver, kind: str = "messageNew") -> Counter[str]:
    found: Counter[str] = Counter()
    for delivery in rx.accepted():
        body = delivery.json()
        if body.get("event") == kind:
            found[body["data"]["subject"]] += 1
    return found


async def _wait_event(rx: Receiver, kind: str, within: float) -> None:
    async with asyncio.timeout(within):
        while not any(d.json().get("event") == kind for d in rx.accepted()):
            await rx.wait_for(rx.accepted_count + 1, timeout=None)


async def wait_subjects(rx: Receiver, wanted: set[str], within: float) -> None:
    async with asyncio.timeout(within):
        while not wanted <= set(subjects(rx)):
            await rx.wait_for(rx.accepted_count + 1, timeout=None)


@dataclass
class Running:
    relay: RelayProcess
    http: aiohttp.ClientSession
    user: Account


@asynccontextmanager
async def running(
    tmp_path: Path,
    dovecot: DovecotServer,
    store_url: str,
    receiver: Receiver,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    """A relay on ``store_url`` watching a fresh Dovecot account, a route to ``receiver``, and
    the account's first message reported (so the listener is up)."""
    user = await asyncio.to_thread(new_account, dovecot)
    port = free_port()
    extra = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_SECRET": "dbfault-test-secret-value",
        "RELAY_STORE_URL": store_url,
        "RELAY_STORE_POOL_SIZE": "3",
        "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RELAY_WEBHOOKS_POLL_INTERVAL": "0.2",
        "RELAY_IMAP_SCAN_INTERVAL": "0.5",
        "RELAY_IMAP_LEASE": "10",
        "RELAY_IMAP_RECONNECT_MIN": "0.1",
        "RELAY_LOG_LEVEL": "info",
    }
    extra.update(env or {})
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, extra))
    account = {
        "account": "dbfault",
        "name": "dbfault",
        "email": user.user,
        "imap": {
            "host": "127.0.0.1",
            "port": dovecot.port,
            "secure": False,
            "auth": {"user": user.user, "pass": user.password},
        },
    }
    await asyncio.to_thread(relay.start)
    try:
        async with aiohttp.ClientSession(
            relay.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            await add_route(http, receiver)
            status, body = await api(http, "POST", "/v1/account", json=account)
            assert status == 200, body
            await _wait_event(receiver, "accountInitialized", 60)
            await asyncio.sleep(1.0)  # the first listing is the baseline
            await dovecot.append(user.user, "INBOX", message("before"))
            await wait_subjects(receiver, {"before"}, 60)
            yield Running(relay, http, user)
    finally:
        await asyncio.to_thread(relay.stop)


def log_events(relay: RelayProcess) -> Counter[str]:
    output = relay.output()
    assert "Traceback" not in output, output[-4000:]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return Counter(line["event"] for line in lines)


async def wait_logged(relay: RelayProcess, text: str, within: float) -> None:
    """Wait until the relay's log contains ``text``."""
    for _ in range(int(within / 0.2)):
        if text in relay.output():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} not logged within {within} s:\n{relay.output()[-3000:]}")
