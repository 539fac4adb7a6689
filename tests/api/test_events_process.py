"""The event stream against a real relay process: a client killed mid-stream resumes with
``Last-Event-ID`` with no gap and no repeat while events keep being stored, and SIGTERM
ends open streams at once."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from relay.config import StoreSettings
from relay.events.model import Event
from relay.store import events as events_store
from relay.store.engine import Store
from relay.store.migrate import migrate
from tests.proc import RelayProcess, free_port, relay_env

TOKEN = "stream-" + "s" * 40
TOTAL = 400

# A stream client: prints "<id> <n>" for each event, flushed as it reads it.
CLIENT = """
import http.client, json, sys
port, token, last = sys.argv[1], sys.argv[2], sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
headers = {"Authorization": "Bearer " + token}
if last:
    headers["Last-Event-ID"] = last
conn.request("GET", "/v1/events/stream?event=messageNew", headers=headers)
resp = conn.getresponse()
print("status", resp.status, flush=True)
ident = data = None
while True:
    line = resp.readline()
    if not line:
        break
    line = line.decode().rstrip("\\n")
    if line.startswith("id: "):
        ident = line[4:]
    elif line.startswith("data: "):
        data = line[6:]
    elif line == "" and ident is not None:
        print(ident, json.loads(data)["data"]["n"], flush=True)
        ident = None
print("end", flush=True)
"""


async def _client(port: int, last: str = "") -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, str(port), TOKEN, last, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).split() == [b"status", b"200"]
    return proc


async def _line(proc: asyncio.subprocess.Process) -> tuple[str, int] | None:
    assert proc.stdout is not None
    raw = await proc.stdout.readline()
    words = raw.split()
    # A line cut short by the kill was not printed in full: the client had not taken it.
    if not raw.endswith(b"\n") or len(words) != 2:
        return None
    return words[0].decode(), int(words[1])


async def _writer(store: Store) -> None:
    """Events 0..TOTAL-1, one transaction each, at a steady pace."""
    for n in range(TOTAL):
        async with store.write() as conn:
            event = Event("messageNew", "a", {"n": n}, int(time.time() * 1000), path="INBOX")
            await events_store.record(conn, [event], default_service_url="http://x")
        await asyncio.sleep(0.005)


@pytest.mark.timeout(120)
async def test_killed_client_resumes_with_last_event_id(tmp_path: Path, store_url: str) -> None:
    """kill -9 of a client mid-stream, then a new one with the last id it printed: together
    they see every event once, in order; SIGTERM then ends the open stream promptly."""
    port = free_port()
    extra = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_STORE_URL": store_url,
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_IMAP_WATCH": "false",
        # Events come from this test's process: no in-process wake-up on the relay's side.
        "RELAY_STREAM_POLL_INTERVAL": "0.1",
    }
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, extra))
    await asyncio.to_thread(relay.start)
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    writer = asyncio.create_task(_writer(store))
    try:
        first = await _client(port)
        seen: list[tuple[str, int]] = []
        while len(seen) < TOTAL // 4:
            line = await _line(first)
            assert line is not None
            seen.append(line)
        first.kill()
        await first.wait()
        # Whatever it printed before it died, it saw.
        while (line := await _line(first)) is not None:
            seen.append(line)
        assert writer.done() is False, "the writer finished before the kill"
        second = await _client(port, seen[-1][0])
        async with asyncio.timeout(60):
            while seen[-1][1] < TOTAL - 1:
                line = await _line(second)
                assert line is not None
                seen.append(line)
        assert [n for _, n in seen] == list(range(TOTAL))
        ids = [int(i) for i, _ in seen]
        assert ids == sorted(set(ids))
        started = time.monotonic()
        code = await asyncio.to_thread(relay.stop, signal.SIGTERM)
        assert code == 0, relay.output()[-3000:]
        assert time.monotonic() - started < 5
        async with asyncio.timeout(5):
            assert await _line(second) is None
        await second.wait()
    finally:
        writer.cancel()
        relay.stop()
        await store.close()
