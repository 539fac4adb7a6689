"""Fixtures for the IMAP client tests: one real Dovecot per session, fresh users per test."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

# The peers live in tests/peers and are shared with bench/; make the repository importable
# whatever rootdir/package layout pytest picked.
_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from relay.imap import ClientOptions, ImapClient  # noqa: E402
from tests.peers.dovecot import DovecotServer, start_dovecot  # noqa: E402
from tests.peers.tcpproxy import TcpProxy  # noqa: E402

from .relay_support import BASIC_CAPABILITIES, PLAIN  # noqa: E402
from .support import Account, new_account, user_pool  # noqa: E402


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A running Dovecot (plain and TLS listeners) shared by the session."""
    # Not tmp_path: pytest's base temp dir is 0700, and Dovecot's unprivileged processes
    # must be able to walk into the server's directory.
    server = start_dovecot(tls=True, users=user_pool())
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def _limited_dovecot(capabilities: str) -> Iterator[DovecotServer]:
    server = DovecotServer(root=Path(tempfile.mkdtemp(prefix="relay-dovecot-")))
    server.add_user(PLAIN.user, PLAIN.password)
    original = server.prepare

    def prepare() -> None:
        original()
        with server.config_path.open("a") as fh:
            fh.write(f"imap_capability = {capabilities}\n")

    server.prepare = prepare  # type: ignore[method-assign]
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def plain_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot advertising neither CONDSTORE nor QRESYNC, like Exchange Online."""
    yield from _limited_dovecot(BASIC_CAPABILITIES + " IDLE")


@pytest.fixture
def no_idle_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot without IDLE (nor CONDSTORE/QRESYNC)."""
    yield from _limited_dovecot(BASIC_CAPABILITIES)


@pytest.fixture
def account(dovecot: DovecotServer) -> Account:
    """A fresh user, so tests never see each other's mail or kicks."""
    return new_account(dovecot)


Connect = Callable[..., Awaitable[ImapClient]]


@pytest.fixture
async def connect(dovecot: DovecotServer) -> AsyncIterator[Connect]:
    """Factory: ``await connect(account=None, port=None, options=None, tls=False)``.

    With an ``account`` the client is logged in and INBOX is not selected. Every client is
    closed at the end of the test.
    """
    clients: list[ImapClient] = []

    async def factory(
        account: Account | None = None,
        *,
        port: int | None = None,
        options: ClientOptions | None = None,
        tls: bool = False,
        **kwargs: object,
    ) -> ImapClient:
        if tls:
            assert dovecot.tls_port is not None
            client = await ImapClient.connect(
                dovecot.host,
                port or dovecot.tls_port,
                ssl=dovecot.client_ssl_context(),
                options=options,
                **kwargs,  # type: ignore[arg-type]
            )
        else:
            client = await ImapClient.connect(
                dovecot.host,
                port or dovecot.port,
                options=options,
                **kwargs,  # type: ignore[arg-type]
            )
        clients.append(client)
        if account is not None:
            await client.login(account.user, account.password)
        return client

    yield factory
    for client in clients:
        client.close()
    await asyncio.sleep(0.01)  # let the transports finish closing


@pytest.fixture
async def proxy(dovecot: DovecotServer) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of Dovecot's plain port that can be blackholed."""
    p = TcpProxy(dovecot.host, dovecot.port)
    await p.start()
    yield p
    await p.stop()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[int]]]:
    """Factory for a one-connection IMAP peer that plays ``script``; returns its port.

    For server behaviours Dovecot cannot be made to show on demand (IDLE answered with BYE
    or NO, literals split across packets, ``{n+}`` literals).
    """
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def factory(script: Script) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)  # type: ignore[arg-type]
            writers.append(writer)
            try:
                await script(reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield factory
    for server in servers:
        server.close()
    # Closing the peer's end lets a script blocked in reader.read() finish by itself.
    for writer in writers:
        writer.transport.abort()
    _, pending = await asyncio.wait(tasks, timeout=2) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    for server in servers:
        await server.wait_closed()
