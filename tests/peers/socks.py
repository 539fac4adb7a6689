"""A tiny SOCKS5 server (RFC 1928, CONNECT only; RFC 1929 user/password when asked) on
127.0.0.1: it counts the connections it accepts and the targets they asked for, and relays
the bytes both ways."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator

_NO_AUTH = 0x00
_USER_PASSWORD = 0x02
_REFUSED_METHOD = 0xFF


class Socks5Server:
    """SOCKS5 on a free port of 127.0.0.1; with ``user`` and ``password``, only for them."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.user = user
        self.password = password
        self.port = 0
        self.accepted = 0
        # (host, port) of every CONNECT that got through.
        self.targets: list[tuple[str, int]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """The proxy URL an account's ``proxy`` names (with the credentials, if any)."""
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"socks5://{auth}127.0.0.1:{self.port}"

    async def start(self) -> Socks5Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            target = await self._handshake(reader, writer)
        except (asyncio.IncompleteReadError, OSError, ValueError):
            target = None
        if target is None:
            self._writers.discard(writer)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            # 0x05: connection refused.
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            self._writers.discard(writer)
            writer.close()
            return
        self.targets.append(target)
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5:
            return None
        wanted = _USER_PASSWORD if self.user else _NO_AUTH
        if wanted not in methods:
            writer.write(bytes([5, _REFUSED_METHOD]))
            return None
        writer.write(bytes([5, wanted]))
        if self.user:
            _, size = await reader.readexactly(2)
            user = (await reader.readexactly(size)).decode()
            (size,) = await reader.readexactly(1)
            password = (await reader.readexactly(size)).decode()
            ok = user == self.user and password == self.password
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return None
        version, command, _, kind = await reader.readexactly(4)
        if version != 5 or command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            return None
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif kind == 3:
            (size,) = await reader.readexactly(1)
            host = (await reader.readexactly(size)).decode()
        else:
            return None
        port = int.from_bytes(await reader.readexactly(2), "big")
        return host, port

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(dst)
            dst.close()


@contextlib.asynccontextmanager
async def socks5_server(
    *, user: str | None = None, password: str | None = None
) -> AsyncIterator[Socks5Server]:
    """Run a :class:`Socks5Server` for the block."""
    server = await Socks5Server(user=user, password=password).start()
    try:
        yield server
    finally:
        await server.stop()
