"""A webhook receiver that misbehaves on purpose, in front of a verifying :class:`Receiver`.

:class:`HostileFront` is a raw HTTP/1.1 server on a free port of 127.0.0.1. It reads each
request whole and answers it the way the next queued :class:`Answer` says (or ``default``):

- :func:`forward`: pass the request to the upstream receiver and relay its status: the
  receiver is healthy;
- :func:`hang`: accept, read the request, never answer (until the client gives up);
- :func:`dribble_head`: send the status line and headers one byte per ``interval``, never
  finishing them;
- :func:`dribble_body`: answer 200 with a large ``Content-Length``, then one byte per
  ``interval``;
- :func:`huge`: answer ``status`` with a body of ``size`` bytes, framed by Content-Length,
  by closing the connection, or chunked;
- :func:`redirect`: answer a 3xx with ``Location``;
- :func:`plain`: answer ``status`` with an empty body.

An answer with a 2xx status first passes the request to the upstream receiver, so that the
receiver (which checks both signatures) sees exactly what the relay may count as delivered;
any other answer keeps the request from it. Every answer closes the connection afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp

# Request headers not passed on to the upstream receiver (hop by hop, or set by the client).
_HOP = frozenset({"host", "connection", "content-length", "transfer-encoding", "keep-alive"})
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """How the front answers one request (see the module)."""

    kind: str
    status: int = 200
    interval: float = 1.0
    size: int = 0
    framing: str = "length"  # length | close | chunked
    location: str | None = None


def forward() -> Answer:
    return Answer("forward")


def hang() -> Answer:
    return Answer("hang", status=0)


def dribble_head(interval: float = 1.0) -> Answer:
    return Answer("dribble_head", status=0, interval=interval)


def dribble_body(interval: float = 1.0) -> Answer:
    return Answer("dribble_body", interval=interval)


def huge(size: int, framing: str = "length", status: int = 200) -> Answer:
    return Answer("body", status=status, size=size, framing=framing)


def plain(status: int) -> Answer:
    return Answer("body", status=status)


def redirect(status: int, location: str) -> Answer:
    return Answer("redirect", status=status, location=location)


@dataclass
class Sent:
    """What the front managed to send for one answer with a body."""

    answer: Answer
    body_bytes: int = 0
    # The client closed the connection before the whole body was sent.
    cut: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class HostileFront:
    """Misbehaving HTTP server on 127.0.0.1 in front of ``upstream`` (a receiver's URL)."""

    def __init__(self, upstream: str = "", default: Answer | None = None) -> None:
        self.upstream = upstream
        self.default = default or forward()
        self.host = "127.0.0.1"
        self.port = 0
        # Connections open now, the most open at once, and requests read so far.
        self.open = 0
        self.max_open = 0
        self.requests = 0
        self.sent: list[Sent] = []
        self._queue: list[Answer] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def respond(self, *answers: Answer) -> None:
        """Answer the next requests so, in arrival order; then ``default``."""
        self._queue.extend(answers)

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> HostileFront:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # A timeout argument (not asyncio.timeout around the call) so the error can say what came.
    async def wait_open(self, n: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait until ``n`` connections are open at once."""
        try:
            async with asyncio.timeout(timeout):
                while self.open < n:
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"waited for {n} open connections; {self.open} open") from None

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The work runs in a task of its own that stop() cancels: asyncio's callback on this
        # one would report a cancellation as an error (Python 3.11).
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        await asyncio.wait([task])
        self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self._changed_now()
        try:
            request = await _read_request(reader)
            if request is not None:
                self.requests += 1
                answer = self._queue.pop(0) if self._queue else self.default
                await self._answer(answer, request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._changed_now()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(
        self,
        answer: Answer,
        request: tuple[dict[str, str], bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if answer.kind == "forward" or 200 <= answer.status < 300:
            status = await self._forward(*request)
            if answer.kind == "forward":
                writer.write(_head(status, {"Content-Length": "0"}))
                await writer.drain()
                return
        if answer.kind == "hang":
            await reader.read()  # until the client gives up and closes
        elif answer.kind == "dribble_head":
            head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100_000
            for i in range(len(head)):
                writer.write(head[i : i + 1])
                await writer.drain()
                await asyncio.sleep(answer.interval)
        elif answer.kind == "dribble_body":
            sent = Sent(answer)
            self.sent.append(sent)
            writer.write(_head(200, {"Content-Length": "100000"}))
            await self._send(writer, sent, (b"x" for _ in range(100_000)), answer.interval)
        elif answer.kind == "body":
            sent = Sent(answer)
            self.sent.append(sent)
            headers = {
                "length": {"Content-Length": str(answer.size)},
                "close": {"Connection": "close"},
                "chunked": {"Transfer-Encoding": "chunked"},
            }[answer.framing]
            writer.write(_head(answer.status, {"Content-Type": "text/plain", **headers}))
            chunks: Iterable[bytes] = _pieces(answer.size)
            if answer.framing == "chunked":
                chunks = (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            await self._send(writer, sent, chunks, 0.0)
            if answer.framing == "chunked" and not sent.cut:
                writer.write(b"0\r\n\r\n")
        elif answer.kind == "redirect":
            assert answer.location is not None
            writer.write(_head(answer.status, {"Location": answer.location, "Content-Length": "0"}))
        await writer.drain()

    async def _send(
        self, writer: asyncio.StreamWriter, sent: Sent, chunks: Iterable[bytes], interval: float
    ) -> None:
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                sent.body_bytes += len(chunk)
                if interval:
                    await asyncio.sleep(interval)
        except ConnectionError:
            sent.cut = True
        finally:
            sent.done.set()

    async def _forward(self, headers: dict[str, str], body: bytes) -> int:
        assert self._http is not None
        passed = {k: v for k, v in headers.items() if k not in _HOP}
        async with self._http.post(self.upstream, data=body, headers=passed) as resp:
            await resp.read()
            return resp.status


async def _read_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
    """Headers (names lower-cased) and body of one request; None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return headers, body


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "Connection"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _pieces(size: int) -> list[bytes]:
    """``size`` bytes of text in pieces of at most 64 KiB (one piece object, repeated)."""
    piece = (b"0123456789abcdef" * (_CHUNK // 16))[:_CHUNK]
    full, rest = divmod(size, _CHUNK)
    return [piece] * full + ([piece[:rest]] if rest else [])
