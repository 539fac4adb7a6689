"""``/v1/events``: the stored events, read by cursor, as pages or as Server-Sent Events.

Each event carries its cursor (its position in the stream, :mod:`relay.store.stream`): a
client that asks for what comes after a cursor gets every event stored since, once, in the
order they committed. The bodies are the exact bytes webhooks sign and send.

``GET /v1/events/stream`` writes ``id: <cursor>``, ``event: <name>``, ``data: <body>`` per
event, a heartbeat comment after ``stream.heartbeat`` seconds without one, and waits for the
store (woken when events commit on this node or, through the bus, on another; polled every
``stream.poll_interval`` otherwise). It reads at most ``stream.page_size`` events from the
store at a time (from the node's window of recent events, ten times as many up to about
128 KiB: those are in memory already, and streams at the same cursor share the page and its
encoding) and writes each page only when the client has taken the previous one (aiohttp's
``write`` waits for the socket to drain), so a client that stops reading holds one page, not
a queue. Streams that fell behind the window together share their store reads
(:class:`relay.store.stream.SharedReads`).
``Last-Event-ID`` wins over ``after``: EventSource reconnects to the URL it was given (with
its original ``after``) and sends the last id it saw in that header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import Sequence

from aiohttp import web
from pydantic import ConfigDict, Field

from relay.api.endpoint import Endpoint, read_query
from relay.api.keys import SETTINGS, STORE
from relay.api.middleware import request_grant
from relay.api.models import Body, Out
from relay.auth.grants import Permission
from relay.errors import Forbidden, InputError
from relay.events.model import iso_ms
from relay.store import accounts as accounts_store
from relay.store import stream

TAG = "Events"
# A page a stream takes from the node's window of recent events: this many times
# stream.page_size events, at most about this many bytes.
_RECENT_PAGES = 10
_RECENT_PAGE_BYTES = 128 * 1024
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class CursorExpired(InputError):
    """The cursor is older than what pruning deleted."""

    status = 410
    reason = "Gone"
    code = "CursorExpired"


class EventsQuery(Body):
    # Query strings: other arguments (access_token) are not ours to refuse.
    model_config = ConfigDict(extra="ignore")
    after: str | None = Field(
        default=None,
        max_length=64,
        description="A cursor: only events after it. Absent: from the oldest event kept",
    )
    limit: int = Field(default=100, ge=1, le=1000)
    account: str | None = Field(default=None, max_length=256)
    event: str | None = Field(default=None, max_length=64)
    path: str | None = Field(default=None, max_length=1024)


class StreamQuery(Body):
    model_config = ConfigDict(extra="ignore")
    after: str | None = Field(
        default=None,
        max_length=64,
        description="A cursor: only events after it (the Last-Event-ID header wins over it)."
        " Absent: from the oldest event kept",
    )
    account: str | None = Field(default=None, max_length=256)
    event: str | None = Field(default=None, max_length=64)
    path: str | None = Field(default=None, max_length=1024)


class StoredEvent(Out):
    cursor: str = Field(description="Resume after this event: ?after=<cursor>")
    id: str = Field(description="The event id (webhook-id of its webhooks)")
    account: str | None = None
    event: str
    path: str | None = None
    date: str
    payload: dict[str, object] = Field(description="The webhook body, byte for byte")


class EventPage(Out):
    events: list[StoredEvent]
    cursor: str = Field(description="Where the next page starts: pass it as ?after=")
    more: bool = Field(description="Whether more events follow already")


class Streams:
    """The streams this node serves, so shutdown can end them."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()
        # Each stream's request, while it waits for the client to take what it wrote.
        self.writing: dict[int, web.Request] = {}
        self.open = 0

    def close(self) -> None:
        """End every stream: waiting ones at once, ones stuck on a client that does not read
        by closing their connection."""
        self.closing.set()
        for request in list(self.writing.values()):
            if request.transport is not None:
                request.transport.abort()


STREAMS = web.AppKey("event_streams", Streams)
SEQUENCER = web.AppKey("event_sequencer", stream.Sequencer)


def setup(app: web.Application) -> None:
    """Give the application its stream registry; shutdown ends the streams."""
    app[STREAMS] = Streams()

    async def end_streams(app: web.Application) -> None:
        app[STREAMS].close()

    app.on_shutdown.append(end_streams)


def _cursor(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    parsed = stream.parse_cursor(value)
    if parsed is None:
        raise InputError(
            f"{field}: is not a cursor (the digits of an event's cursor from this API)",
            field=field,
        )
    return parsed


async def _accounts(request: web.Request, account: str | None) -> list[str] | None:
    """The accounts whose events the request may read: ``account`` when given (an
    account-bound token may name only one it sees: 403), else the token's (None: all)."""
    grant = request_grant(request)
    visible: list[str] | None = None
    if grant is not None and grant.account is not None:
        async with request.app[STORE].read() as conn:
            visible = await accounts_store.visible_to(conn, grant)
    if account is None:
        return visible
    if visible is not None and account not in visible:
        raise Forbidden(
            f"The token is bound to account {visible[0]!r} and may not read another's events",
            field="account",
        )
    return [account]


async def _page(
    reads: stream.SharedReads,
    after: int | None,
    limit: int,
    accounts: Sequence[str] | None,
    event: str | None,
    path: str | None,
    field: str,
) -> stream.Page:
    page = await reads.page(after, limit, accounts, event, path)
    if page.expired:
        raise CursorExpired(
            f"{field}: events after this cursor were pruned (the events table keeps them"
            " webhooks.retention_days once delivered); start again without a cursor, from"
            " the oldest event kept, and reconcile what may have been missed",
            field=field,
        )
    if page.ahead:
        raise InputError(
            f"{field}: is beyond the last event stored; use a cursor this relay returned",
            field=field,
        )
    return page


def _item(e: stream.StreamEvent) -> str:
    """One page entry as JSON, with the stored body inserted as it is (its exact bytes)."""
    head: dict[str, object] = {"cursor": str(e.pos), "id": e.id}
    if e.account is not None:
        head["account"] = e.account
    head["event"] = e.event
    if e.path is not None:
        head["path"] = e.path
    head["date"] = iso_ms(e.created_ms)
    fields = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    return f'{fields[:-1]},"payload":{e.payload}}}'


async def list_events(request: web.Request) -> web.Response:
    """``GET /v1/events``: a page of stored events after ``after``, oldest first."""
    query = read_query(request, EventsQuery)
    after = _cursor(query.after, "after")
    accounts = await _accounts(request, query.account)
    page = await _page(
        request.app[SEQUENCER].reads,
        after,
        query.limit,
        accounts,
        query.event,
        query.path,
        "after",
    )
    items = ",".join(_item(e) for e in page.events)
    more = "true" if page.more else "false"
    body = f'{{"events":[{items}],"cursor":"{page.next}","more":{more}}}'
    return web.Response(body=body.encode(), content_type="application/json")


def _frame(e: stream.StreamEvent) -> bytes:
    """One event as SSE."""
    if "\n" in e.payload or "\r" in e.payload:
        data = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(e.payload))
    else:
        data = f"data: {e.payload}\n"
    return f"id: {e.pos}\nevent: {e.event}\n{data}\n".encode()


class _Encoded:
    """Pages as SSE, by the page's identity (the page is held too, so the identity is not
    reused while the entry lives). Streams at the same cursor get the same Page from the
    node's shared reads (stream.Recent, stream.SharedReads): it is encoded once for all of
    them. The newest ``pages`` pages, at most ``size`` bytes."""

    def __init__(self, pages: int, size: int) -> None:
        self.pages = pages
        self.size = size
        self._kept: OrderedDict[int, tuple[stream.Page, bytes]] = OrderedDict()
        self._bytes = 0

    def __call__(self, page: stream.Page) -> bytes:
        kept = self._kept.get(id(page))
        if kept is not None:
            return kept[1]
        data = b"".join(_frame(e) for e in page.events)
        self._kept[id(page)] = (page, data)
        self._bytes += len(data)
        while len(self._kept) > self.pages or self._bytes > self.size:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._bytes -= len(dropped)
        return data


_frames = _Encoded(pages=64, size=16 * 1024 * 1024)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events/stream``: the events after the cursor, then each new one as it is
    stored, as Server-Sent Events (see the module docstring)."""
    query = read_query(request, StreamQuery)
    last_id = request.headers.get("Last-Event-ID")
    if last_id is not None and last_id.strip():
        after = _cursor(last_id.strip(), "Last-Event-ID")
        field = "Last-Event-ID"
    else:
        after = _cursor(query.after, "after")
        field = "after"
    accounts = await _accounts(request, query.account)
    settings = request.app[SETTINGS].stream
    sequencer = request.app[SEQUENCER]
    streams = request.app[STREAMS]
    loop = asyncio.get_running_loop()
    # The first page is read before the answer starts, so a bad or expired cursor still
    # gets its JSON error.
    changed = sequencer.changed()
    page = await _page(
        sequencer.reads, after, settings.page_size, accounts, query.event, query.path, field
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            # nginx: pass each event on at once.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    deadline = loop.time() + settings.max_duration if settings.max_duration > 0 else None
    streams.open += 1
    sequencer.readers += 1

    async def write(data: bytes) -> None:
        streams.writing[id(request)] = request
        try:
            await response.write(data)
        finally:
            streams.writing.pop(id(request), None)

    try:
        await write(b"retry: 1000\n\n")
        silent_since = loop.time()
        while not streams.closing.is_set():
            if page.events:
                # One write per page (one syscall, one drain): the page is in memory anyway.
                await write(_frames(page))
                silent_since = loop.time()
            if not page.more:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                wait = silent_since + settings.heartbeat - now
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if wait <= 0:
                    await write(b": heartbeat\n\n")
                    silent_since = loop.time()
                    continue
                await _first(changed, streams.closing, seconds=wait)
                if streams.closing.is_set():
                    break
                changed = sequencer.changed()
            # From the node's window of recent events (in memory already, encoded once for
            # every stream at this cursor) a stream that keeps up takes more per write.
            recent = sequencer.recent.page(
                page.next,
                _RECENT_PAGES * settings.page_size,
                accounts,
                query.event,
                query.path,
                size=_RECENT_PAGE_BYTES,
            )
            if recent is not None:
                page = recent
                continue
            try:
                page = await _page(
                    sequencer.reads,
                    page.next,
                    settings.page_size,
                    accounts,
                    query.event,
                    query.path,
                    field,
                )
            except CursorExpired:
                # Pruning passed a client that fell far behind: end the stream; its
                # reconnect gets the 410.
                break
    except (ConnectionResetError, ConnectionError):
        # The client went away (or shutdown closed a connection it had stopped reading).
        return response
    finally:
        streams.open -= 1
        sequencer.readers -= 1
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _first(changed: asyncio.Event, closing: asyncio.Event, *, seconds: float) -> None:
    """Wait until either event is set, or ``seconds``."""
    waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(closing.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


_PERMISSION = Permission("events", "read")

ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/events",
        list_events,
        "Stored events after a cursor, oldest first (the webhook bodies, each with its cursor)",
        TAG,
        query=EventsQuery,
        response=EventPage,
        errors={
            410: "Events after the cursor were pruned (`code`: CursorExpired); start again"
            " without `after`",
        },
        permission=_PERMISSION,
    ),
    Endpoint(
        "GET",
        "/v1/events/stream",
        stream_events,
        "The events after a cursor, then each new one, as Server-Sent Events"
        " (id: cursor, event: name, data: the webhook body)",
        TAG,
        query=StreamQuery,
        content_type="text/event-stream",
        body_schema={
            "type": "object",
            "required": ["id", "event", "data"],
            "properties": {
                "id": {"type": "string", "description": "The event's cursor"},
                "event": {"type": "string", "description": "The event name"},
                "data": {"type": "string", "description": "The webhook body, byte for byte"},
            },
        },
        errors={
            410: "Events after the cursor were pruned (`code`: CursorExpired); start again"
            " without `after`",
        },
        permission=_PERMISSION,
    ),
]
