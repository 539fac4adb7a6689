"""Input at the edges, on the wire: a real relay process and raw HTTP/1.1, so that aiohttp's
parser (with the limits of relay.api.limits.PARSER_LIMITS) sees exactly what is sent."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from relay.config import StoreSettings
from relay.store import Store
from relay.store.schema import metadata
from tests.proc import RelayProcess, free_port, relay_env

TOKEN = "wire-" + "w" * 40
LIMIT = 8192
ACCOUNT = json.dumps(
    {
        "account": "pw",
        "name": "Password user",
        "email": "pw@example.com",
        "imap": {"host": "127.0.0.1", "port": 1143, "auth": {"user": "pw", "pass": "x"}},
    }
).encode()


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def error(self) -> dict[str, Any]:
        assert self.content_type.startswith("application/json"), self
        return dict(json.loads(self.body))


@dataclass
class Wire:
    relay: RelayProcess
    store_url: str

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.relay.port), timeout=10)

    def send(self, data: bytes) -> Answer:
        """Send ``data`` on a new connection and read one response."""
        with self.connect() as sock:
            sock.sendall(data)
            return read(sock)

    def snapshot(self) -> dict[str, list[str]]:
        """Every row of every table, the audit log included."""

        async def rows() -> dict[str, list[str]]:
            store = Store.open(StoreSettings(url=self.store_url))
            try:
                async with store.read() as conn:
                    return {
                        t.name: sorted(repr(tuple(r)) for r in (await conn.execute(select(t))))
                        for t in metadata.sorted_tables
                    }
            finally:
                await store.close()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, rows()).result()


def read(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.getheader("Content-Type") or "", response.read())


def head(method: str, target: str, *extra: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def post_account(*extra: str, target: str = "/v1/account", body: bytes = ACCOUNT) -> bytes:
    """A valid account creation: only what ``extra`` adds can make it fail."""
    return (
        head(
            "POST",
            target,
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *extra,
        )
        + body
    )


@pytest.fixture
def wire(tmp_path: Path, store_url: str) -> Iterator[Wire]:
    port = free_port()
    extra = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_STORE_URL": store_url,
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_SERVER_MAX_BODY_BYTES": str(LIMIT),
        "RELAY_IMAP_WATCH": "false",
        "RELAY_SEND_DELIVER": "false",
        "RELAY_WEBHOOKS_DELIVER": "false",
    }
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, extra))
    relay.start()
    try:
        yield Wire(relay, store_url)
    finally:
        relay.stop()
    assert "unhandled error" not in relay.output()


def many(count: int, size: int = 1) -> list[str]:
    return [f"X-Extra-{i}: {'v' * size}" for i in range(count)]


# (what is sent, status, field of the JSON error or None for aiohttp's plain-text answer)
HEADS = [
    ("one 100 KiB header", post_account(f"X-Big: {'a' * 102_400}"), 400, None),
    ("one 10 KiB header", post_account(f"X-Big: {'a' * 10_240}"), 431, "X-Big"),
    ("5,000 headers", post_account(*many(5000)), 400, None),
    ("120 headers", post_account(*many(120)), 431, "headers"),
    ("40 KiB of headers", post_account(*many(40, 1000)), 431, "headers"),
    ("a 100 KiB URL", post_account(target="/v1/account?q=" + "a" * 102_400), 400, None),
    ("a 12 KiB URL", post_account(target="/v1/account?q=" + "a" * 12_000), 414, "url"),
]


def test_giant_headers_and_urls_never_reach_the_api(wire: Wire) -> None:
    """A giant header, thousands of headers or a giant URL is refused before the token is
    looked at: aiohttp's parser answers the grossly oversized ones (plain-text 400), the API
    the rest (414/431 JSON naming the field); nothing is stored, not even in the audit log.
    The same request without the excess creates the account."""
    before = wire.snapshot()
    for name, data, status, field in HEADS:
        answer = wire.send(data)
        assert answer.status == status, (name, answer)
        if field is None:
            assert answer.content_type.startswith("text/plain"), (name, answer)
            continue
        err = answer.error()
        assert err["statusCode"] == status, (name, err)
        assert err["field"] == field, (name, err)
        assert err["code"] in ("RequestHeaderFieldsTooLarge", "URITooLong"), (name, err)
        assert "at most" in err["message"], (name, err)
    assert wire.snapshot() == before
    assert wire.send(post_account(*many(20))).status == 200
    assert wire.snapshot()["accounts"] != before["accounts"]


def test_declared_length_over_the_limit_is_answered_without_the_body(wire: Wire) -> None:
    """A Content-Length over the limit is a 413 naming the limit at once, without waiting for
    the body; with Expect: 100-continue no 100 is sent; nothing is stored."""
    before = wire.snapshot()
    for expect in ((), ("Expect: 100-continue",)):
        with wire.connect() as sock:
            sock.sendall(
                head(
                    "POST",
                    "/v1/account",
                    "Content-Type: application/json",
                    f"Content-Length: {LIMIT * 1000}",
                    *expect,
                )
            )
            # The final answer comes first: no "100 Continue" before it.
            assert sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 413"
            answer = read(sock)
        assert answer.status == 413, answer
        err = answer.error()
        assert err["code"] == "PayloadTooLarge"
        assert err["message"] == f"Request body is larger than the limit of {LIMIT} bytes"
        assert err["field"] == "body"
    assert wire.snapshot() == before


def test_expect_continue_within_the_limit(wire: Wire) -> None:
    """With Expect: 100-continue and a body within the limit the relay invites the body."""
    before = wire.snapshot()
    with wire.connect() as sock:
        sock.sendall(post_account("Expect: 100-continue")[: -len(ACCOUNT)])
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(ACCOUNT)
        assert read(sock).status == 200
    assert wire.snapshot()["accounts"] != before["accounts"]


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def test_bodies_that_lie_or_break(wire: Wire) -> None:
    """A body longer than its Content-Length is read only as far as announced (not JSON: a
    400 naming the body) and the surplus is refused by the parser; a chunked body
    over the limit is a 413; a malformed chunked body is the parser's 400; a body cut short
    by a closed connection ends as refused input (no error logged). Nothing is stored."""
    before_rows = wire.snapshot()
    before = {k: v for k, v in before_rows.items() if k != "token_log"}
    with wire.connect() as sock:
        announced = b"Content-Length: %d" % len(ACCOUNT)
        sock.sendall(post_account().replace(announced, b"Content-Length: 10"))
        # The surplus reads as a second, malformed request: the parser refuses it, and
        # with it the connection (the announced 10 bytes may or may not be answered first).
        answer = read(sock)
        assert answer.status == 400, answer
        if answer.content_type.startswith("application/json"):
            assert answer.error()["field"] == "body"
            answer = read(sock)
            assert answer.status == 400, answer
        assert answer.content_type.startswith("text/plain"), answer
    big = chunked(b'{"pad": "' + b"x" * LIMIT + b'"}')
    chunk_head = head(
        "POST", "/v1/account", "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    answer = wire.send(chunk_head + big)
    assert answer.status == 413, answer
    assert answer.error()["message"] == f"Request body is larger than the limit of {LIMIT} bytes"
    answer = wire.send(chunk_head + b"zz\r\nabc\r\n0\r\n\r\n")
    assert answer.status == 400, answer
    with wire.connect() as sock:
        sock.sendall(post_account()[:-20])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""
    assert {k: v for k, v in wire.snapshot().items() if k != "token_log"} == before
