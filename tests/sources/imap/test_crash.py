"""kill -9 while folders and mail come and go: after a restart each change is stored once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from relay.config import StoreSettings
from relay.store import Store
from relay.store.schema import events
from tests.peers.dovecot import DovecotServer
from tests.proc import RelayProcess, free_port, relay_env
from tests.sources.imap.support import message, new_account

TOKEN = "crash-" + "i" * 40
FOLDERS = 12


async def _stored(url: str) -> list[dict[str, Any]]:
    store = Store.open(StoreSettings(url=url))
    try:
        async with store.read() as conn:
            rows = (await conn.execute(select(events.c.payload).order_by(events.c.seq))).all()
    finally:
        await store.close()
    return [json.loads(row.payload) for row in rows]


async def _wait_for(url: str, check: Any, what: str, within: float = 60.0) -> list[Any]:
    async with asyncio.timeout(within):
        while True:
            found = await _stored(url)
            if check(found):
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(what)  # pragma: no cover (the timeout raises first)


def _of(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in found if e["event"] == kind]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_while_folders_change_loses_and_repeats_nothing(
    tmp_path: Path, dovecot: DovecotServer, store_url: str
) -> None:
    """Folders are created (each with a message filed into a polled folder) while the relay
    runs; it is killed with SIGKILL part-way and started again: every folder is one
    mailboxNew and every message one messageNew, none lost, none twice."""
    user = await asyncio.to_thread(new_account, dovecot)
    port = free_port()
    extra = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_SECRET": "crash-test-secret-value",
        "RELAY_IMAP_POLL_INTERVAL": "0.2",
        "RELAY_IMAP_SCAN_INTERVAL": "0.25",
        "RELAY_IMAP_LEASE": "2",
        "RELAY_IMAP_RECONNECT_MIN": "0.05",
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_STORE_URL": store_url,
    }
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, extra))
    account = {
        "account": "crash",
        "name": "crash",
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
        async with (
            aiohttp.ClientSession(relay.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            http.post("/v1/account", json=account) as response,
        ):
            assert response.status == 200, await response.text()
        await _wait_for(
            store_url, lambda f: _of(f, "accountInitialized"), "the account's first baseline"
        )
        # The first listing is the baseline: wait for it before creating folders.
        await asyncio.sleep(1.0)
        killed = False
        for n in range(FOLDERS):
            await dovecot.doveadm("mailbox", "create", "-u", user.user, f"Case {n}")
            await dovecot.append(user.user, "Sent", message(f"sent {n}"))
            await asyncio.sleep(0.15)
            if not killed and n == FOLDERS // 2:
                await _wait_for(store_url, lambda f: _of(f, "mailboxNew"), "some folders")
                await asyncio.to_thread(relay.kill)
                killed = True
                stored = len(_of(await _stored(store_url), "mailboxNew"))
                assert stored < FOLDERS, "killed too late to prove anything"
                await asyncio.to_thread(relay.start)
        found = await _wait_for(
            store_url,
            lambda f: len(_of(f, "mailboxNew")) >= FOLDERS and len(_of(f, "messageNew")) >= FOLDERS,
            "every folder and message reported",
        )
        await asyncio.sleep(1.0)  # anything reported twice would show by now
        found = await _stored(store_url)
    finally:
        await asyncio.to_thread(relay.stop)
    folders = Counter(e["data"]["path"] for e in _of(found, "mailboxNew"))
    assert folders == {f"Case {n}": 1 for n in range(FOLDERS)}
    sent = Counter(e["data"]["subject"] for e in _of(found, "messageNew"))
    assert sent == {f"sent {n}": 1 for n in range(FOLDERS)}
    assert all(e["path"] == "Sent" for e in _of(found, "messageNew"))
