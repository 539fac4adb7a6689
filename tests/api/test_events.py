"""``GET /v1/events`` and ``GET /v1/events/stream``: pages and Server-Sent Events by cursor,
the 410 of a pruned cursor, an account-bound token's view, webhook bodies byte for byte, and
a client that stops reading."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from relay.api.events import SEQUENCER, STREAMS
from relay.api.keys import STORE
from relay.config import Settings, StreamSettings
from relay.events.model import Event
from relay.store import deliveries as queue
from relay.store import events as events_store
from relay.store import stream
from tests.api.helpers import call
from tests.api.test_permissions import imap_account, mint
from tests.conftest import API_TOKEN, MakeClient
from tests.peers.receiver import Receiver
from tests.webhooks.conftest import SERVICE_SECRET, loopback_settings

URL = "https://relay.example.com"


def _event(account: str, name: str = "messageNew", path: str = "INBOX", **data: Any) -> Event:
    return Event(name, account, {"path": path, **data}, 1_700_000_000_000, path=path)


async def _record(client: TestClient, *batch: Event) -> None:
    """Store ``batch`` in the relay's store and wait until the stream has placed it."""
    async with client.server.app[STORE].write() as conn:
        await events_store.record(conn, list(batch), default_service_url=URL)
    await client.server.app[SEQUENCER].step()


async def _page(client: TestClient, query: str = "", status: int = 200) -> Any:
    return await call(client, "GET", f"/v1/events{query}", status=status)


async def _mine(client: TestClient, **extra: Any) -> list[dict[str, Any]]:
    """Every page of messageNew events, followed by cursor."""
    seen: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = "&".join(f"{k}={v}" for k, v in {"limit": 2, **extra}.items())
        page = await _page(client, f"?event=messageNew&{query}{cursor}")
        seen += page["events"]
        cursor = f"&after={page['cursor']}"
        if not page["more"]:
            return seen


async def test_pages_follow_cursors_and_filters(client: TestClient) -> None:
    """Pages are oldest first, each event with its cursor and its stored body; following the
    cursor reads each event once; account, event and path filter."""
    stored = [
        _event("a", n=1),
        _event("b", n=2),
        _event("a", "messageDeleted", n=3),
        _event("a", path="Sent", n=4),
        _event("b", n=5),
    ]
    await _record(client, *stored)
    everything = await _mine(client)
    assert [e["payload"]["data"]["n"] for e in everything] == [1, 2, 4, 5]
    cursors = [int(e["cursor"]) for e in everything]
    assert cursors == sorted(cursors)
    assert [e["id"] for e in everything] == [stored[i].id for i in (0, 1, 3, 4)]
    assert {e["event"] for e in everything} == {"messageNew"}
    only_a = await _mine(client, account="a")
    assert [e["payload"]["data"]["n"] for e in only_a] == [1, 4]
    sent = await _page(client, "?path=Sent")
    assert [e["payload"]["data"]["n"] for e in sent["events"]] == [4]
    deleted = await _page(client, "?event=messageDeleted")
    assert [e["account"] for e in deleted["events"]] == ["a"]
    # The body is the stored payload, byte for byte.
    raw = await (await client.get("/v1/events?event=messageDeleted")).text()
    async with client.server.app[STORE].read() as conn:
        rows = await events_store.for_account(conn, "a")
    payload = next(r["payload"] for r in rows if r["id"] == stored[2].id)
    assert f'"payload":{payload}}}' in raw
    # Past the end: empty, and the cursor stays usable.
    last = await _page(client, f"?after={everything[-1]['cursor']}&event=messageNew")
    assert last["events"] == []
    assert last["more"] is False


async def test_a_bad_cursor_is_a_400_naming_after(client: TestClient) -> None:
    """A cursor that is not one, or is beyond every event stored, is a 400 naming ``after``."""
    await _record(client, _event("a"))
    for bad in ("abc", "-1", "1.5", "9" * 30, "99999"):
        body = await _page(client, f"?after={bad}", status=400)
        assert body["field"] == "after", body
        assert body["code"] == "InputValidationError"
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": "x"})
    body = await resp.json()
    assert resp.status == 400
    assert body["field"] == "Last-Event-ID"


async def test_a_pruned_cursor_is_a_410(client: TestClient) -> None:
    """Once pruning deleted events after a cursor, the page and the stream answer 410
    CursorExpired saying what to do; a cursor at the watermark and no cursor still work."""
    old = [Event("messageNew", "a", {"n": n}, 1_000 + n, path="INBOX") for n in range(3)]
    await _record(client, *old)
    await _record(client, _event("a", n=9))
    first = await _page(client)
    cursors = [e["cursor"] for e in first["events"]]
    async with client.server.app[STORE].write() as conn:
        await queue.prune(conn, before_ms=1_000_000)
    body = await _page(client, f"?after={cursors[0]}", status=410)
    assert body["code"] == "CursorExpired"
    assert body["field"] == "after"
    assert "without a cursor" in body["message"]
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": cursors[1]})
    assert resp.status == 410
    assert (await resp.json())["code"] == "CursorExpired"
    kept = await _page(client, f"?after={cursors[2]}")
    assert [e["payload"]["data"]["n"] for e in kept["events"]] == [9]
    assert [e["payload"]["data"]["n"] for e in (await _page(client))["events"]] == [9]


async def test_an_account_bound_token_sees_its_account_only(client: TestClient) -> None:
    """A token bound to ``a`` with events:read reads a's events only, and naming another
    account is a 403 naming ``account``; without the permission it is a 403."""
    for account in ("a", "b"):
        await call(client, "POST", "/v1/account", imap_account(account))
    await _record(client, _event("a", n=1), _event("b", n=2))
    token = await mint(client, account="a", permissions={"events": frozenset({"read"})})
    headers = {"Authorization": f"Bearer {token}"}
    resp = await client.get("/v1/events", headers=headers)
    page = await resp.json()
    assert resp.status == 200, page
    assert {e["account"] for e in page["events"]} == {"a"}
    assert [
        e["payload"]["data"].get("n") for e in page["events"] if e["event"] == "messageNew"
    ] == [1]
    resp = await client.get("/v1/events?account=b", headers=headers)
    body = await resp.json()
    assert resp.status == 403
    assert body["field"] == "account"
    resp = await client.get("/v1/events/stream?account=b", headers=headers)
    assert resp.status == 403
    frames, resp = await _frames(client, 1, headers=headers, query="?event=messageNew")
    resp.close()
    assert [json.loads(f["data"])["data"]["n"] for f in frames] == [1]
    unbound = await mint(client, account="a", permissions={"message": frozenset({"read"})})
    resp = await client.get("/v1/events", headers={"Authorization": f"Bearer {unbound}"})
    assert resp.status == 403


async def _frames(
    client: TestClient,
    count: int,
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    resp: ClientResponse | None = None,
) -> tuple[list[dict[str, str]], ClientResponse]:
    """Open (or keep reading) a stream until ``count`` events arrived; those events."""
    if resp is None:
        resp = await client.get(f"/v1/events/stream{query}", headers=headers or {})
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
    frames: list[dict[str, str]] = []
    frame: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len([f for f in frames if "data" in f]) < count:
            line = (await resp.content.readline()).decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                if frame:
                    frames.append(frame)
                frame = {}
                continue
            key, _, value = line.partition(":")
            frame[key or "comment"] = value.removeprefix(" ")
    return [f for f in frames if "data" in f], resp


async def test_stream_sends_stored_then_new_events(
    make_client: MakeClient, settings: Settings
) -> None:
    """The stream sends what is stored after the cursor, then each new event as it commits
    (id: cursor, event: name, data: the stored body), with heartbeats while idle."""
    client = await make_client(
        dataclasses.replace(settings, stream=StreamSettings(heartbeat=0.2, poll_interval=60.0))
    )
    await _record(client, _event("a", n=1), _event("a", n=2))
    first = (await _page(client))["events"][0]["cursor"]
    frames, resp = await _frames(client, 1, query=f"?after={first}")
    assert [json.loads(f["data"])["data"]["n"] for f in frames[:1]] == [2]
    assert frames[0]["event"] == "messageNew"
    # A new event arrives without the poll (60 s): the commit woke the stream.
    async with client.server.app[STORE].write() as conn:
        await events_store.record(conn, [_event("a", n=3)], default_service_url=URL)
    more, _ = await _frames(client, 1, resp=resp)
    assert [json.loads(f["data"])["data"]["n"] for f in more] == [3]
    assert int(more[0]["id"]) > int(frames[0]["id"])
    # Idle: heartbeat comments.
    line = b""
    async with asyncio.timeout(5):
        while not line.startswith(b": heartbeat"):
            line = await resp.content.readline()
    resp.close()


async def test_last_event_id_wins_over_after(client: TestClient) -> None:
    """A reconnect sends its original ``after`` and the last id it saw: the header decides."""
    await _record(client, *(_event("a", n=n) for n in range(4)))
    cursors = [e["cursor"] for e in (await _page(client))["events"]]
    frames, resp = await _frames(
        client, 1, query=f"?after={cursors[0]}", headers={"Last-Event-ID": cursors[2]}
    )
    resp.close()
    assert [f["id"] for f in frames] == [cursors[3]]


async def test_stream_bodies_are_the_webhook_bodies(
    make_client: MakeClient, settings: Settings
) -> None:
    """What a route's receiver gets (and verifies) and what the stream sends as ``data`` are
    the same bytes, for the same event."""
    client = await make_client(loopback_settings(settings))
    await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
    async with Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET) as rx:
        created = await call(client, "POST", "/v1/webhooks", {"url": rx.url}, status=201)
        rx.secret = created["secret"]
        event = _event("a", subject='Grüße \u2028 "quoted"\n line', n=1)
        await _record(client, event)
        await rx.wait_for(1)
    delivered = rx.accepted()[0]
    assert delivered.id == event.id
    frames, resp = await _frames(client, 1, query="?event=messageNew")
    resp.close()
    assert frames[0]["data"].encode() == delivered.body


async def test_a_client_that_stops_reading_holds_bounded_memory(
    make_client: MakeClient, settings: Settings
) -> None:
    """A client that stops reading blocks its stream's writes: the relay's buffer for it
    stays bounded (one write's worth) while many more events are stored than it took."""
    client = await make_client(
        dataclasses.replace(settings, stream=StreamSettings(page_size=20, poll_interval=0.2))
    )
    filler = "x" * 16_384
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", client.port))
    request = (
        f"GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_TOKEN}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = await loop.sock_recv(sock, 200)
    assert head.startswith(b"HTTP/1.1 200"), head
    streams = client.server.app[STREAMS]
    total = 0
    try:
        for _ in range(40):
            await _record(client, *(_event("a", blob=filler) for _ in range(25)))
            total += 25 * 16_500
        # The stream is stuck writing to the client that does not read.
        async with asyncio.timeout(10):
            while not streams.writing:  # noqa: ASYNC110 (the stream's own state)
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        (stuck,) = streams.writing.values()
        assert stuck.transport is not None
        buffered = stuck.transport.get_write_buffer_size()
        assert total > 15 * 1024 * 1024
        # aiohttp's writer pauses at the transport's high-water mark (64 KiB) plus one event.
        assert buffered < 256 * 1024, buffered
    finally:
        sock.close()
    # The stream ends once the connection is gone.
    async with asyncio.timeout(10):
        while streams.open:  # noqa: ASYNC110 (the stream's own state)
            await asyncio.sleep(0.05)


async def test_streams_behind_the_window_share_their_store_reads(
    make_client: MakeClient, settings: Settings, monkeypatch: Any
) -> None:
    """Streams that fall behind the node's window of recent events together (a burst larger
    than the window) read each page from the store once between them, and each still gets
    every event once, in order."""
    monkeypatch.setattr(stream, "_RECENT_EVENTS", 10)
    client = await make_client(
        dataclasses.replace(settings, stream=StreamSettings(page_size=20, poll_interval=60.0))
    )
    await _record(client, _event("a", n=-1))
    start = (await _page(client))["events"][0]["cursor"]
    opened = [await _frames(client, 0, query=f"?after={start}") for _ in range(8)]
    reads = client.server.app[SEQUENCER].reads
    before = reads.store_reads
    # 200 events at once: beyond the window, which starts again after them.
    await _record(client, *(_event("a", n=n) for n in range(200)))
    for _, resp in opened:
        frames, _ = await _frames(client, 200, resp=resp)
        resp.close()
        assert [json.loads(f["data"])["data"]["n"] for f in frames] == list(range(200))
    # Ten pages of 20 (and the short page at the end): one read each, not one per stream.
    assert reads.store_reads - before <= 2 * 11, reads.store_reads - before
