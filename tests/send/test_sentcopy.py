"""sentCopy: what the relay does to the Sent Items copies Exchange keeps after an SMTP send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from relay.config import Settings
from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import (
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    consented_main,
    introspect,
    tokens_of,
    with_microsoft,
)
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.peers.smtp import Received, SmtpPeer
from tests.sources.imap.relay_support import wait_events

from .conftest import send_settings, submit

TO = {"to": [{"address": "rita@example.net"}], "subject": "Copies", "text": "Hello"}


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """The mailboxes behind the SMTP peer: where its sent copies land."""
    with dovecot_server() as server:
        yield server


class Exchange:
    """An SMTP peer that saves sent copies like Exchange: main user, and shared ``From``."""

    def __init__(self, dovecot: DovecotServer) -> None:
        self.dovecot = dovecot
        self.save_shared = True

    async def on_sent(self, got: Received) -> None:
        assert got.login is not None
        await self.dovecot.append(got.login, "Sent", got.data)
        if self.save_shared and got.header_from.lower() != got.login:
            await self.dovecot.append(got.header_from, "Sent", got.data)


@pytest.fixture
async def exchange(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, dovecot: DovecotServer
) -> AsyncIterator[tuple[SmtpPeer, Exchange]]:
    """An XOAUTH2 SMTP server checked against the sandbox, saving copies into Dovecot."""

    async def check(user: str, token: str) -> dict[str, Any] | None:
        return dict(await introspect(http, sandbox, token))

    saver = Exchange(dovecot)
    peer = await SmtpPeer(check_token=check, on_sent=saver.on_sent).start()
    yield peer, saver
    await peer.stop()


async def copies(dovecot: DovecotServer, user: str, message_id: str) -> int:
    """How many messages with ``message_id`` are in ``user``'s Sent folder."""
    out = await dovecot.doveadm(
        "search", "-u", user, "mailbox", "Sent", "header", "Message-ID", message_id
    )
    return len([line for line in out.splitlines() if line.strip()])


async def _relay(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
    smtp: SmtpPeer,
    mode: str,
) -> TestClient:
    """Main and shared accounts on the peers; the main token opens both mailboxes."""
    client = await make_client(send_settings(with_microsoft(settings, sandbox)))
    await consented_main(client, http, sandbox)
    servers = {
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "secure": False},
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "disabled": True},
    }
    await call(client, "PUT", "/v1/account/my-account", servers)
    await call(client, "POST", "/v1/account", {**SHARED_PAYLOAD, "sentCopy": mode})
    user, token = await tokens_of(client).access_token("my-account")
    assert user == MAIN
    await asyncio.to_thread(dovecot.grant, token, MAIN, [SHARED])
    return client


@pytest.mark.parametrize(
    ("mode", "server_saves_shared", "main_left", "shared_left"),
    [
        ("provider", True, 1, 1),
        ("shared", True, 0, 1),
        ("shared", False, 0, 1),
        ("none", True, 0, 0),
    ],
)
async def test_sent_copy_modes_over_smtp(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
    exchange: tuple[SmtpPeer, Exchange],
    mode: str,
    server_saves_shared: bool,
    main_left: int,
    shared_left: int,
) -> None:
    """provider keeps both copies; shared keeps (or appends) only the shared mailbox's; none
    removes both."""
    smtp, saver = exchange
    saver.save_shared = server_saves_shared
    client = await _relay(make_client, settings, http, sandbox, dovecot, smtp, mode)
    view = await call(client, "GET", "/v1/account/shared")
    assert view["sentCopy"] == mode
    queued = await submit(client, TO, account="shared")
    (sent,) = await wait_events(client, "shared", "messageSent")
    mid = queued["messageId"]
    assert await copies(dovecot, MAIN, mid) == main_left
    assert await copies(dovecot, SHARED, mid) == shared_left
    if mode == "provider":
        assert "sentCopy" not in sent["data"]
    else:
        assert sent["data"]["sentCopy"]["mode"] == mode
        assert sent["data"]["sentCopy"]["appended"] is (not server_saves_shared)
