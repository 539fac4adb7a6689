"""SQLite faults: the disk fills up under the relay, and a relay stops under write load."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from relay.config import StoreSettings
from relay.events.model import Event
from relay.store import Store
from relay.store import events as events_store
from relay.store.engine import now_ms
from tests.faults.support import (
    add_route,
    api,
    log_events,
    running,
    subjects,
    wait_logged,
    wait_subjects,
)
from tests.peers.dovecot import DovecotServer
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env
from tests.sources.imap.support import message
from tests.webhooks.conftest import SERVICE_SECRET

TOKEN = "sqlitefault-" + "s" * 40


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 24 MiB tmpfs of the test's own, to fill up."""
    root = Path(tempfile.mkdtemp(prefix="relay-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        root.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full (unbuffered: no write is left
    over for the close to fail on)."""
    with path.open("wb", buffering=0) as out:
        for size in (1 << 16, 1 << 10, 1):
            with contextlib.suppress(OSError):
                while out.write(b"\0" * size):
                    pass


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sqlite_disk_full_while_mail_arrives_loses_nothing(
    tmp_path: Path, dovecot: DovecotServer, small_disk: Path, receiver: Receiver
) -> None:
    """The file system of the SQLite database fills up while messages arrive: writes fail
    (an API write answers 503 and stores nothing), the relay keeps running, and once space is
    freed every message is delivered exactly once."""
    url = f"sqlite:///{small_disk / 'relay.db'}"
    async with running(tmp_path, dovecot, url, receiver) as run:
        filler = small_disk / "filler"
        await asyncio.to_thread(_fill, filler)
        sent: list[str] = []
        # The WAL may still have room for a few commits: mail on until a write fails.
        async with asyncio.timeout(60):
            while "store unavailable; writes are retried" not in run.relay.output():
                subject = f"during {len(sent)}"
                await dovecot.append(run.user.user, "INBOX", message(subject))
                sent.append(subject)
                await asyncio.sleep(0.3)
        routes_before = (await api(run.http, "GET", "/v1/webhooks"))[1]
        status, body = await api(run.http, "POST", "/v1/webhooks", json={"url": receiver.url})
        assert status == 503, body
        assert body["code"] == "StoreError", body
        await asyncio.sleep(3.0)
        assert run.relay.proc is not None
        assert run.relay.proc.poll() is None, run.relay.output()[-3000:]
        filler.unlink()

        await wait_subjects(receiver, set(sent), 90)
        await dovecot.append(run.user.user, "INBOX", message("after"))
        await wait_subjects(receiver, {"after"}, 60)
        await wait_logged(run.relay, "store available again", 30)
        assert (await api(run.http, "GET", "/v1/webhooks"))[1] == routes_before
    assert subjects(receiver) == {"before": 1, "after": 1} | dict.fromkeys(sent, 1)
    said = log_events(run.relay)
    assert said["store unavailable; writes are retried"] == 1, said


def _write_once(db: Path) -> float:
    """One write from another process's point of view: the time it committed."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE settings SET updated_ms = updated_ms + 1")
        conn.commit()
        return time.monotonic()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sigterm_under_write_load_releases_the_sqlite_lock(tmp_path: Path) -> None:
    """A relay delivering thousands of events (every outcome a write) and taking API writes
    gets SIGTERM: it exits by itself, and another process's write waiting on the database
    lock commits within a second of that exit."""
    port = free_port()
    extra = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_SECRET": "sqlitefault-test-secret-value",
        "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RELAY_WEBHOOKS_TIMEOUT": "2",
        "RELAY_LOG_LEVEL": "warning",
    }
    env = relay_env(tmp_path, port, extra)
    db = tmp_path / "relay.db"
    relay = RelayProcess(tmp_path, port, env)
    async with Receiver(
        secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET, keep=False
    ) as rx:
        await asyncio.to_thread(relay.start)
        try:
            async with aiohttp.ClientSession(
                relay.url, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as http:
                await add_route(http, rx)
                store = Store.open(StoreSettings(url=env["RELAY_STORE_URL"]))
                batch = [Event("messageNew", "acct", {"n": i}, now_ms()) for i in range(20_000)]
                try:
                    async with store.write() as conn:
                        await events_store.record(conn, batch, default_service_url=relay.url)
                finally:
                    await store.close()
                await rx.wait_for(500, timeout=60)

                async def api_writes() -> None:
                    n = 0
                    while True:
                        n += 1
                        imap = {"host": "127.0.0.1", "port": 9, "auth": {"user": "u", "pass": "p"}}
                        body = {"account": f"a{n}", "name": "x", "imap": imap}
                        with contextlib.suppress(aiohttp.ClientError):
                            await api(http, "POST", "/v1/account", json=body)

                writers = [asyncio.create_task(api_writes()) for _ in range(4)]
                await asyncio.sleep(1.0)
                assert relay.proc is not None
                relay.proc.terminate()
                waiting = asyncio.create_task(asyncio.to_thread(_write_once, db))
                code = await asyncio.to_thread(relay.proc.wait, 60)
                exited = time.monotonic()
                for writer in writers:
                    writer.cancel()
                await asyncio.gather(*writers, return_exceptions=True)
                committed = await waiting
        finally:
            await asyncio.to_thread(relay.stop)
    assert code == 0, relay.output()[-4000:]
    assert rx.accepted_count < 20_000, "stopped too late to prove anything"
    assert committed - exited < 1.0, f"the lock was held {committed - exited:.1f} s after exit"
    assert "Traceback" not in relay.output(), relay.output()[-4000:]
