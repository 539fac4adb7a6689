"""The webhook client against a raw HTTP/1.1 server: keep-alive, stale connections, TLS,
framing, limits and what it sends."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from relay.webhooks.poster import AttemptError, Poster
from relay.webhooks.ssrf import AddressPolicy

LOOPBACK = AddressPolicy(allow_networks=("127.0.0.0/8",))

# How the server answers one request: gets the request's head and body and the writer; returns
# whether the connection stays open for another request.
Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


async def ok(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return True


@dataclass
class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers each request with ``handler``."""

    handler: Handler = ok
    connections: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                if not await self.handler(head, body, writer):
                    return
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.closed.set()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler = ok, tls: ssl.SSLContext | None = None) -> RawServer:
        state = RawServer(handler)
        server = await asyncio.start_server(state.serve, "127.0.0.1", 0, ssl=tls)
        state.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def poster() -> AsyncIterator[Poster]:
    client = Poster(LOOPBACK, timeout=5)
    yield client
    await client.close()


async def test_connection_kept_alive_and_reused(raw: Callable[..., Awaitable[RawServer]]) -> None:
    """Requests one after another to one host share one connection."""
    server = await raw()
    client = Poster(LOOPBACK, timeout=5)
    try:
        for _ in range(3):
            answer = await client.post(f"http://127.0.0.1:{server.port}/h", b"{}", {})
            assert (answer.status, answer.excerpt) == (200, "ok")
    finally:
        await client.close()
    assert server.connections == 1
    assert len(server.requests) == 3


async def test_request_as_sent(raw: Callable[..., Awaitable[RawServer]], poster: Poster) -> None:
    """Request line with path and query, Host with the port, Basic authorization from the
    URL's credentials, the given headers, Content-Length and the body bytes."""
    server = await raw()
    url = f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/in/hook?x=1&y=%20"
    await poster.post(url, b'{"a":1}', {"X-Custom": "v", "Content-Type": "application/json"})
    ((head, body),) = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /in/hook?x=1&y=%20 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "Authorization: Basic dXNAZXI6cDpzcw==" in lines  # us@er:p:ss
    assert "X-Custom: v" in lines
    assert "Content-Length: 7" in lines
    assert body == b'{"a":1}'


async def test_idle_connection_closed_by_the_receiver_is_replaced(
    raw: Callable[..., Awaitable[RawServer]], poster: Poster
) -> None:
    """A receiver that closes a kept-alive connection after answering: the next request
    goes out on a new connection and arrives once."""

    async def answer_then_close(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return False

    server = await raw(answer_then_close)
    url = f"http://127.0.0.1:{server.port}/h"
    assert (await poster.post(url, b"1", {})).status == 204
    await asyncio.wait_for(server.closed.wait(), 5)
    assert (await poster.post(url, b"2", {})).status == 204
    assert [body for _, body in server.requests] == [b"1", b"2"]
    assert server.connections == 2


async def test_idle_connection_closed_after_keepalive(
    raw: Callable[..., Awaitable[RawServer]],
) -> None:
    """A connection idle for longer than ``keepalive`` is closed by the client."""
    server = await raw()
    client = Poster(LOOPBACK, timeout=5, keepalive=0.2)
    try:
        await client.post(f"http://127.0.0.1:{server.port}/h", b"{}", {})
        await asyncio.wait_for(server.closed.wait(), 5)
    finally:
        await client.close()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "status", "excerpt"),
    [
        (CONTINUE, 201, "x"),
        (CHUNKED, 200, "abc"),
        (b"HTTP/1.0 202 Accepted\r\n\r\nuntil close", 202, "until close"),
        (b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n", 503, ""),
    ],
)
async def test_answers_framed_every_way(
    raw: Callable[..., Awaitable[RawServer]],
    poster: Poster,
    answer: bytes,
    status: int,
    excerpt: str,
) -> None:
    """Informational answers are skipped; chunked, length and close-framed bodies are read."""

    async def send(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        return False

    server = await raw(send)
    got = await poster.post(f"http://127.0.0.1:{server.port}/", b"{}", {})
    assert (got.status, got.excerpt) == (status, excerpt)
    assert got.retry_after == ("7" if status == 503 else None)


async def test_location_and_retry_after_read(
    raw: Callable[..., Awaitable[RawServer]], poster: Poster
) -> None:
    """The two headers the verdict needs, whatever their case."""

    async def moved(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 301 Moved\r\nlocation: http://elsewhere/\r\nRETRY-AFTER: 5\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        return True

    server = await raw(moved)
    got = await poster.post(f"http://127.0.0.1:{server.port}/", b"{}", {})
    assert (got.status, got.location, got.retry_after) == (301, "http://elsewhere/", "5")
    assert len(server.requests) == 1  # not followed


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", "closed the connection before answering"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n", "exceed 64 KiB"),
    ],
)
async def test_no_answer_is_an_error(
    raw: Callable[..., Awaitable[RawServer]], poster: Poster, answer: bytes, error: str
) -> None:
    """Closing without a status line, speaking another protocol, or endless headers."""

    async def send(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.2)
        return False

    server = await raw(send)
    with pytest.raises(AttemptError, match=error):
        await poster.post(f"http://127.0.0.1:{server.port}/", b"{}", {})


async def test_time_limit_after_the_headers_keeps_the_status(
    raw: Callable[..., Awaitable[RawServer]],
) -> None:
    """A body that stops coming: the answer is what came, the status counts."""

    async def stall(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(3)
        return False

    server = await raw(stall)
    client = Poster(LOOPBACK, timeout=0.5)
    try:
        got = await client.post(f"http://127.0.0.1:{server.port}/", b"{}", {})
    finally:
        await client.close()
    assert (got.status, got.excerpt) == (200, "partial")


async def test_time_limit_before_the_headers_is_a_timeout(
    raw: Callable[..., Awaitable[RawServer]],
) -> None:
    """No status line in time: TimeoutError."""

    async def hang(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3)
        return False

    server = await raw(hang)
    client = Poster(LOOPBACK, timeout=0.3)
    try:
        with pytest.raises(TimeoutError):
            await client.post(f"http://127.0.0.1:{server.port}/", b"{}", {})
    finally:
        await client.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_verified_against_the_name(
    raw: Callable[..., Awaitable[RawServer]], ca: trustme.CA
) -> None:
    """HTTPS to a name whose certificate the CA signed works; an untrusted CA is an error
    that says TLS."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server = await raw(tls=server_ctx)
    url = f"https://localhost:{server.port}/h"

    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    client = Poster(LOOPBACK, timeout=5, ssl_context=trusting, resolve=loopback)
    try:
        assert (await client.post(url, b"{}", {})).status == 200
        assert b"Host: localhost:" in server.requests[0][0]
    finally:
        await client.close()
    stranger = Poster(LOOPBACK, timeout=5, resolve=loopback)
    try:
        with pytest.raises(AttemptError, match="TLS"):
            await stranger.post(url, b"{}", {})
    finally:
        await stranger.close()
    assert len(server.requests) == 1


async def test_request_lost_on_a_reused_connection_is_sent_again(
    raw: Callable[..., Awaitable[RawServer]], poster: Poster
) -> None:
    """A kept-alive connection the receiver drops as the next request arrives (its idle
    timeout crossing the request): the request goes once more on a new connection."""
    server = await raw()

    async def drop_second(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 2:
            return False  # closes without answering
        return await ok(head, body, writer)

    server.handler = drop_second
    url = f"http://127.0.0.1:{server.port}/h"
    assert (await poster.post(url, b"1", {})).status == 200
    assert (await poster.post(url, b"2", {})).status == 200
    assert [body for _, body in server.requests] == [b"1", b"2", b"2"]
    assert server.connections == 2


async def test_request_lost_on_a_new_connection_is_an_error(
    raw: Callable[..., Awaitable[RawServer]], poster: Poster
) -> None:
    """On a connection opened for it, a request the receiver drops is not sent again."""

    async def drop(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    server = await raw(drop)
    with pytest.raises(AttemptError, match="closed the connection before answering"):
        await poster.post(f"http://127.0.0.1:{server.port}/h", b"1", {})
    assert len(server.requests) == 1


async def test_bytes_after_the_answer_make_the_connection_unusable(
    raw: Callable[..., Awaitable[RawServer]], poster: Poster
) -> None:
    """A receiver that sends more than one answer at once: the first counts, the connection
    is not used again (the next request gets its own answer on a new connection)."""
    server = await raw()

    async def twice(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n"
            )
            return True
        return await ok(head, body, writer)

    server.handler = twice
    url = f"http://127.0.0.1:{server.port}/h"
    assert (await poster.post(url, b"1", {})).status == 200
    assert (await poster.post(url, b"2", {})).status == 200
    assert server.connections == 2
