"""Fixtures for sending: an SMTP peer, a relay with a quick outbox, a password account."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.config import SendSettings, Settings
from tests.api.helpers import call

# The sandbox fixtures of the OAuth2 tests (sending as Microsoft 365 mailboxes uses them).
from tests.auth.conftest import _no_ca_bundle_override, http, sandbox, signer  # noqa: F401
from tests.peers.smtp import SmtpPeer

ME = "me@example.com"
PASSWORD = "smtp-password"


def send_settings(settings: Settings, **send: Any) -> Settings:
    """``settings`` with an outbox that polls and retries quickly."""
    values: dict[str, Any] = {
        "poll_interval": 0.05,
        "retry_min": 0.2,
        "retry_max": 1.0,
        "timeout": 5.0,
        "lease": 10.0,
        **send,
    }
    return dataclasses.replace(settings, send=SendSettings(**values))


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpPeer]:
    """An SMTP server that accepts ``me@example.com`` with a password."""
    peer = await SmtpPeer(passwords={ME: PASSWORD}).start()
    yield peer
    await peer.stop()


async def add_password_account(
    client: TestClient,
    smtp: SmtpPeer,
    account: str = "acct",
    email: str = ME,
    *,
    port: int | None = None,
) -> None:
    """An account that sends through ``smtp`` (or ``port``) with a password, no TLS."""
    await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": account,
            "name": "Me",
            "email": email,
            "imap": {"host": "127.0.0.1", "port": 1, "auth": {"user": email, "pass": "x"}},
            "smtp": {
                "host": "127.0.0.1",
                "port": port or smtp.port,
                "secure": False,
                "auth": {"user": email, "pass": PASSWORD},
            },
        },
    )


async def submit(
    client: TestClient,
    body: dict[str, Any],
    *,
    account: str = "acct",
    status: int = 200,
    key: str | None = None,
) -> Any:
    """POST /v1/account/{account}/submit."""
    headers = {"Idempotency-Key": key} if key else {}
    resp = await client.post(f"/v1/account/{account}/submit", json=body, headers=headers)
    payload = await resp.json()
    assert resp.status == status, payload
    return payload


async def outbox_entry(client: TestClient, queue_id: str) -> Any:
    """GET /v1/outbox/{queueId}."""
    return await call(client, "GET", f"/v1/outbox/{queue_id}")


class CountingProxy:
    """A TCP relay in front of a server: counts connections and can cut them all."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.accepted = 0
        # Hang up on the next thing a client says, instead of passing it on.
        self.hang_up_next = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, client=True)),
            asyncio.create_task(self._pump(up_reader, writer, client=False)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, client: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if client and self.hang_up_next:
                    self.hang_up_next = False
                    return
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        """Close every open connection (a server dropping idle clients)."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def proxy(smtp: SmtpPeer) -> AsyncIterator[CountingProxy]:
    """A connection-counting relay in front of ``smtp``."""
    relay = await CountingProxy(smtp.port).start()
    yield relay
    await relay.stop()
