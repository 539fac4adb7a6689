"""A tiny TCP proxy on 127.0.0.1 that can stop forwarding, to fake a dead network path.

``blackhole()`` keeps every connection open but silently drops the bytes in both
directions, the way a vanished NAT entry or a pulled cable looks to a client: no FIN, no
RST, just silence. ``drop_connections()`` closes them instead (the client sees EOF).

A ``hook`` (a factory called once per accepted connection) may rewrite what flows each way:
:class:`ImapIdleDrops` is one for IMAP that drops chosen untagged responses while the client
is in IDLE, the way a server whose IDLE went quiet (Exchange Online) looks to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol


class Hook(Protocol):
    """What a proxy connection passes on: each chunk read is replaced by the return value."""

    def upstream(self, data: bytes) -> bytes:
        """Client -> server."""
        ...

    def downstream(self, data: bytes) -> bytes:
        """Server -> client."""
        ...


HookFactory = Callable[[], Hook]


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(
        self, target_host: str, target_port: int, *, hook: HookFactory | None = None
    ) -> None:
        """``hook``: called for each accepted connection; its :class:`Hook` sees and may
        rewrite every chunk of that connection."""
        self.target_host = target_host
        self.target_port = target_port
        self.hook = hook
        self.host = "127.0.0.1"
        self.port = 0
        self.blackholed = False
        # Connections accepted so far.
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        """Stop forwarding (connections stay open; bytes are dropped)."""
        self.blackholed = True

    def restore(self) -> None:
        """Forward again."""
        self.blackholed = False

    async def drop_connections(self) -> None:
        """Close every proxied connection (the client sees EOF)."""
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._writers.discard(writer)
            writer.close()
            return
        self._writers.add(up_writer)
        hook = self.hook() if self.hook is not None else None
        pumps = (
            (reader, up_writer, hook.upstream if hook else None),
            (up_reader, writer, hook.downstream if hook else None),
        )
        for src, dst, change in pumps:
            task = asyncio.create_task(self._pump(src, dst, change))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        change: Callable[[bytes], bytes] | None,
    ) -> None:
        try:
            while data := await src.read(65536):
                if change is not None:
                    data = change(data)
                if not self.blackholed and data:
                    dst.write(data)
                    await dst.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(dst)
            dst.close()
            with contextlib.suppress(Exception):
                await dst.wait_closed()


@contextlib.asynccontextmanager
async def tcp_proxy(
    target_host: str, target_port: int, *, hook: HookFactory | None = None
) -> AsyncIterator[TcpProxy]:
    """Run a :class:`TcpProxy` for the block."""
    proxy = TcpProxy(target_host, target_port, hook=hook)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


# -- IMAP: untagged responses lost while in IDLE ----------------------------------------------

_UNTAGGED = re.compile(rb"\* (?:\d+ )?([A-Za-z]+)")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n\Z")
_IDLE = re.compile(rb"\S+ IDLE\r\n\Z", re.IGNORECASE)
_TAGGED = re.compile(rb"(\S+) ((?:UID )?[A-Za-z]+)")


class ImapIdleDrops:
    """A proxy hook factory (``TcpProxy(..., hook=drops)``) that drops the untagged responses
    named in ``kinds`` (``EXISTS``, ``RECENT``, ``FETCH``, ``EXPUNGE``, ``VANISHED`` ...)
    while the client is between ``IDLE`` and ``DONE``, and passes everything else.

    One object serves every connection of the proxy: ``kinds`` may be changed at any time
    (empty: drop nothing); ``dropped`` counts what was dropped by kind, ``passed`` the
    untagged responses let through during IDLE by kind, ``commands`` the client's tagged
    commands by name (``IDLE``, ``UID FETCH`` ...), ``done`` its DONEs and ``idling`` the
    connections in IDLE now.
    """

    def __init__(self, kinds: Iterable[str] = ("EXISTS", "RECENT")) -> None:
        self.kinds = {k.upper() for k in kinds}
        self.dropped: Counter[str] = Counter()
        self.passed: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.done = 0
        self.idling = 0

    def __call__(self) -> Hook:
        return _ImapIdleConnection(self)


class _ImapIdleConnection:
    """One connection's view: IMAP lines in both directions, literals passed untouched."""

    def __init__(self, drops: ImapIdleDrops) -> None:
        self.drops = drops
        self.idling = False
        self._up = _Lines()
        self._down = _Lines()

    def upstream(self, data: bytes) -> bytes:
        for line, whole in self._up.feed(data):
            if not whole:
                continue
            if line.upper() == b"DONE\r\n":
                if self.idling:
                    self.idling = False
                    self.drops.idling -= 1
                self.drops.done += 1
                continue
            match = _TAGGED.match(line)
            if match:
                self.drops.commands[match.group(2).decode().upper()] += 1
            if _IDLE.match(line) and not self.idling:
                self.idling = True
                self.drops.idling += 1
        # The client's bytes pass unchanged; only the state was read from them.
        return data

    def downstream(self, data: bytes) -> bytes:
        out = bytearray()
        for line, whole in self._down.feed(data):
            # A response with a literal is passed whole (its rest follows the literal).
            if whole and self.idling and not _LITERAL.search(line):
                match = _UNTAGGED.match(line)
                kind = match.group(1).decode().upper() if match else ""
                if kind in self.drops.kinds:
                    self.drops.dropped[kind] += 1
                    continue
                if kind:
                    self.drops.passed[kind] += 1
            out += line
        return bytes(out)


class _Lines:
    """Cuts a byte stream into CRLF lines; a literal announced by ``{n}`` passes as it comes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._literal = 0

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """What ``data`` completes: ``(line, True)`` for each CRLF line, ``(chunk, False)``
        for literal bytes. A partial line waits for the rest."""
        buffer = self._buffer + data
        out: list[tuple[bytes, bool]] = []
        at = 0
        while at < len(buffer):
            if self._literal:
                chunk = buffer[at : at + self._literal]
                self._literal -= len(chunk)
                at += len(chunk)
                out.append((chunk, False))
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                break
            line = buffer[at : end + 2]
            at = end + 2
            literal = _LITERAL.search(line)
            if literal:
                self._literal = int(literal.group(1))
            out.append((line, True))
        self._buffer = buffer[at:]
        return out
