"""The HTTP client of webhook attempts: POST one body, read the status, the two headers the
verdict needs and the first KiB of the answer.

Written for the relay rather than taken from aiohttp's client because an attempt is the
relay's hot path and needs little of a general client: aiohttp's request (auto headers,
cookie jar, payload registry, response streams, a writer task per request) cost about
60-80 µs of the one event loop per delivery on the measuring machine, more than everything
else a delivery does; a POST on a kept-alive connection whose answer httptools parses (llhttp,
the parser of Node.js) costs about 25 µs. What is kept of a general client:

- connections are kept alive per (scheme, host, port) and reused, newest first; an idle one
  is closed after ``keepalive`` seconds; an answer not read to its end closes its connection;
- a request on a reused connection that the receiver had closed meanwhile (no byte of an
  answer came) is sent once more on a new connection: delivery is at least once anyway;
- names are resolved with the event loop's resolver and cached for ``dns_ttl`` seconds; every
  address is checked against the SSRF policy before a socket is opened to it, so a name that
  resolves (or rebinds) to a refused address is refused like the literal address;
- TLS verifies the certificate against the name in the URL (SNI), with the system's CAs
  unless another context is given;
- nothing is followed: a 3xx is an answer like any other (the verdict names its Location);
- the status line and headers may take at most 64 KiB; the body is read up to ``excerpt``
  bytes, then the connection is closed (an endless or huge body costs nothing);
- ``timeout`` bounds the whole attempt (resolving, connecting, TLS, sending, the status line,
  headers and excerpt). Once the status line and headers are in, the attempt has an answer: a
  body that stops coming, breaks off or runs out of time leaves the excerpt short.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import unquote

import httptools
from yarl import URL

from relay.webhooks import ssrf
from relay.webhooks.ssrf import AddressPolicy, screen

_HEAD_LIMIT = 64 * 1024


class AttemptError(OSError):
    """An attempt that got no answer (no status line and headers), with why, for the log."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None
    location: str | None
    excerpt: str


@dataclass(frozen=True, slots=True)
class _Target:
    """What a URL gives every request to it, worked out once per URL."""

    host: str  # to resolve (IDNA), without IPv6 brackets
    port: int
    tls: bool
    head: bytes  # request line, Host (and Authorization) header lines

    @property
    def key(self) -> tuple[str, int, bool]:
        """What connections to it are kept under: other paths on the host share them."""
        return self.host, self.port, self.tls


@lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise AttemptError(f"cannot POST to {url!r}: not an http(s) URL with a host")
    host = parsed.raw_host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    if not parsed.is_default_port():
        shown = f"{shown}:{port}"
    lines = [f"POST {parsed.raw_path_qs or '/'} HTTP/1.1", f"Host: {shown}"]
    if parsed.raw_user is not None:
        # Credentials in the URL go as Basic authorization, as every HTTP client sends them.
        pair = f"{unquote(parsed.raw_user)}:{unquote(parsed.raw_password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(pair.encode()).decode("ascii"))
    head = "".join(f"{line}\r\n" for line in lines).encode("utf-8")
    return _Target(host, port, parsed.scheme == "https", head)


class _Connection(asyncio.Protocol):
    """One connection: a request at a time, its answer parsed as it arrives."""

    def __init__(self, excerpt: int) -> None:
        self._limit = excerpt
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._received = 0
        self._headed = False
        self._informational = False
        self._status = 0
        self._retry_after: bytes | None = None
        self._location: bytes | None = None
        self._body = bytearray()
        self._reusable = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they are one.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headed:
            self._answer()  # the body broke off: the status has decided already
        else:
            error = AttemptError("the receiver closed the connection before answering")
            error.__cause__ = exc
            self._waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes after the answer, or with none asked for: the connection is not reusable.
            self.close()
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the receiver switched protocols")
        except httptools.HttpParserError as exc:
            if self._headed:
                self._answer()  # what follows the headers is broken: the status counts
            else:
                self._fail(f"the answer is not HTTP/1.x: {exc}")
        else:
            if not self._headed and self._received > _HEAD_LIMIT:
                limit = _HEAD_LIMIT // 1024
                self._fail(f"the answer's status line and headers exceed {limit} KiB")

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            # A second answer to one request (in the same read as the first): whatever it
            # is, the connection cannot be trusted with another request.
            self._reusable = False
        self._retry_after = self._location = None

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after" and self._retry_after is None:
            self._retry_after = value
        elif lowered == b"location" and self._location is None:
            self._location = value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        # 1xx answers (100 Continue, 103 Early Hints) come before the real one.
        self._informational = 100 <= status < 200
        if not self._informational:
            self._status = status
            self._headed = True

    def on_body(self, body: bytes) -> None:
        if self._informational or self._waiter is None or self._waiter.done():
            return
        room = self._limit - len(self._body)
        if room > 0:
            self._body += body[:room]
        if len(self._body) >= self._limit:
            self._answer()  # enough: the rest is not read (the connection goes)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
        elif self._waiter is not None and not self._waiter.done():
            self._answer(reusable=self._parser.should_keep_alive())

    # -- the request ---------------------------------------------------------------------------

    def request(self, payload: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = 0
        self._headed = False
        self._body.clear()
        self.transport.write(payload)
        return self._waiter

    @property
    def answered_nothing(self) -> bool:
        """Whether not a byte of an answer came to the last request."""
        return self._received == 0

    def partial(self) -> Answer | None:
        """The answer so far, once its status line and headers are in (at a time limit)."""
        return self._make_answer() if self._headed else None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _answer(self, *, reusable: bool = False) -> None:
        if self._waiter is None or self._waiter.done():
            return
        self._reusable = reusable
        self._waiter.set_result(self._make_answer())

    def _make_answer(self) -> Answer:
        return Answer(
            status=self._status,
            retry_after=None if self._retry_after is None else self._retry_after.decode("latin-1"),
            location=None if self._location is None else self._location.decode("latin-1"),
            excerpt=self._body.decode(errors="replace"),
        )

    def _fail(self, why: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(AttemptError(why))
        self.close()

    @property
    def usable(self) -> bool:
        """Whether the connection is still open (as far as the event loop knows)."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self._reusable and not self.closed


# Resolves a host name (and port) to its addresses, in the order to try them.
Resolve = Callable[[str, int], Awaitable[list[str]]]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class Poster:
    """POSTs webhook attempts over kept-alive connections (see the module)."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        timeout: float,
        keepalive: float = 15.0,
        dns_ttl: float = 10.0,
        excerpt: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve or ssrf.resolve
        self._timeout = timeout
        self._keepalive = keepalive
        self._dns_ttl = dns_ttl
        self._excerpt = excerpt
        self._ssl = ssl_context
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._names: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` with ``headers`` to ``url``: the answer, once its status line and
        headers are in. Raises ``TimeoutError`` when none came in time, :class:`ssrf.SsrfRefused`
        for a refused address, :class:`AttemptError` (an ``OSError``) for the rest."""
        target = _target(url)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        payload = b"".join(
            (
                target.head,
                f"Content-Length: {len(body)}\r\n{lines}\r\n".encode(),
                body,
            )
        )
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                conn, reused = await self._connection(target)
                try:
                    answer = await conn.request(payload)
                except AttemptError:
                    if not (reused and conn.answered_nothing):
                        raise
                    # The receiver had closed this idle connection as it was taken: once
                    # more on a fresh one.
                    self._forget(conn)
                    conn, _ = await self._connection(target, fresh=True)
                    answer = await conn.request(payload)
        except TimeoutError:
            partial = conn.partial() if conn is not None else None
            if conn is not None:
                self._forget(conn)
            if partial is None:
                raise
            return partial
        except BaseException:
            if conn is not None:
                self._forget(conn)
            raise
        if conn.reusable:
            self._park(target, conn)
        else:
            self._forget(conn)
        return answer

    async def close(self) -> None:
        """Close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    # -- connections -----------------------------------------------------------------------------

    async def _connection(
        self, target: _Target, *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        """A connection to ``target`` and whether it was kept from an earlier request."""
        idle = self._idle.get(target.key)
        stale = time.monotonic() - self._keepalive
        while idle and not fresh:
            conn = idle.pop()
            if conn.usable and conn.idle_since > stale:
                return conn, True
            self._forget(conn)
        return await self._connect(target), False

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        allowed, refused = screen(await self._addresses(target), self._policy, target.host)
        failed: OSError | None = None
        for address in allowed:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._excerpt),
                    address,
                    target.port,
                    ssl=self._tls() if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
            except OSError as exc:
                failed = exc
                continue
            self._open.add(conn)
            return conn
        if failed is not None:
            why = failed.strerror or str(failed) or failed.__class__.__name__
            if isinstance(failed, ssl.SSLError):
                why = f"TLS: {failed.reason or failed}"
            raise AttemptError(f"cannot connect to {target.host}:{target.port}: {why}") from failed
        if refused is not None:
            raise refused
        raise AttemptError(f"{target.host} has no address")

    async def _addresses(self, target: _Target) -> list[str]:
        if _is_address(target.host):
            return [target.host]
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._names.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = await self._resolve(target.host, target.port)
        except OSError as exc:
            raise AttemptError(f"cannot resolve {target.host}: {exc.strerror or exc}") from exc
        self._names[key] = (now + self._dns_ttl, addresses)
        return addresses

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _park(self, target: _Target, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(target.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``keepalive``."""
        self._sweeper = None
        cutoff = time.monotonic() - self._keepalive
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if c.idle_since > cutoff and not c.closed]
            for conn in idle:
                if conn not in keep:
                    self._forget(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)
