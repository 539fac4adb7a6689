"""End to end: the IMAP server refuses an OAuth2 token the relay still takes for valid.

Dovecot checks each XOAUTH2 token against the sandbox (its grants snapshot), as Exchange
Online checks tokens with Microsoft's identity platform: a token the sandbox revoked is
refused at the next login although its expiry, as the relay knows it, is far off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient

from relay.config import Settings
from relay.sandbox.server import RunningSandbox, start_sandbox
from relay.sandbox.signing import Signer
from relay.sandbox.state import SandboxState
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.dovecot import DovecotServer, dovecot_server
from tests.sandbox.graph_helpers import admin
from tests.sources.imap.relay_support import (
    relay_settings,
    settle,
    stored_events,
    wait_events,
    wait_state,
)
from tests.sources.imap.support import message

from .conftest import (
    DONE,
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    add_sandbox_app,
    consent,
    sandbox_admin,
    tokens_of,
    with_microsoft,
)

REFUSED = "the IMAP server refused the access token; refreshing"
REFRESHED = "access token refreshed"


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot whose XOAUTH2 asks the sandbox whether a token is valid."""
    with dovecot_server(sandbox_tokens=True) as server:
        yield server


@pytest.fixture
async def sandbox(
    tmp_path: Path, signer: Signer, dovecot: DovecotServer
) -> AsyncIterator[RunningSandbox]:
    """The seeded sandbox, writing its grants snapshot where the Dovecot reads it."""
    running = await start_sandbox(
        "127.0.0.1",
        0,
        tmp_path / "sandbox",
        seed=True,
        state=SandboxState(signer=signer),
        grants_path=dovecot.tokens_path,
    )
    yield running
    await running.close()


async def _shared_listening(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
) -> tuple[TestClient, str]:
    """The main account consented (its IMAP listener off: it lends server and token) and
    its shared mailbox listening; the main account's Exchange token."""
    client = await make_client(relay_settings(with_microsoft(settings, sandbox)))
    app_id = await add_sandbox_app(client, sandbox)
    link = await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": "my-account",
            "name": "Main",
            "email": MAIN,
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "disabled": True},
            "oauth2": {"provider": app_id, "authorize": True, "redirectUrl": DONE},
        },
    )
    assert (await consent(client, http, link["redirect"])).status == 302
    await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
    await wait_state(client, "shared", "connected")
    await dovecot.append(SHARED, "INBOX", message("before"))
    await wait_events(client, "shared", "messageNew")
    _, token = await tokens_of(client).access_token("my-account")
    return client, token


async def test_revoked_token_is_refreshed_and_the_login_tried_again(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
) -> None:
    """A shared mailbox whose main account's token was revoked early: the next login is
    refused, the token is dropped, one refresh gets a new one, the second login works; no
    authenticationError, and the mail keeps coming, each message once."""
    client, token = await _shared_listening(make_client, settings, http, sandbox, dovecot)

    with structlog.testing.capture_logs() as logs:
        revoked = await sandbox_admin(http, sandbox, "tokens/revoke", {"token": token})
        # Exchange drops the sessions of a revoked token; the listener logs in again.
        await dovecot.kick(SHARED)
        await dovecot.append(SHARED, "INBOX", message("after the revocation"))
        found = await wait_events(client, "shared", "messageNew", count=2)
        await wait_state(client, "shared", "connected")
        await settle()

    assert revoked == {"user": MAIN, "resource": "https://outlook.office.com", "revoked": True}
    assert [e["data"]["subject"] for e in found] == ["before", "after the revocation"]
    assert len(await stored_events(client, "shared", "messageNew")) == 2
    assert await stored_events(client, "shared", "authenticationError") == []
    assert await stored_events(client, "my-account", "authenticationError") == []
    assert [e["account"] for e in logs if e["event"] == REFUSED] == ["shared"]
    assert [e["account"] for e in logs if e["event"] == REFRESHED] == ["my-account"]
    _, fresh = await tokens_of(client).access_token("my-account")
    assert fresh != token


async def test_token_refused_again_after_the_refresh_is_an_authentication_error(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: DovecotServer,
) -> None:
    """The main user lost Full Access to the shared mailbox: its token is refused, and so
    is the fresh one after the one refresh; then one authenticationError with the IMAP
    server's answer, and no more tries until auth_retry."""
    client, _ = await _shared_listening(make_client, settings, http, sandbox, dovecot)

    with structlog.testing.capture_logs() as logs:
        await admin(http, sandbox, "DELETE", "grants", {"user": MAIN, "mailbox": SHARED})
        await dovecot.kick(SHARED)
        (refused,) = await wait_events(client, "shared", "authenticationError")
        await settle()

    assert await wait_state(client, "shared", "authenticationError") == "authenticationError"
    assert refused["data"]["serverResponseCode"] == "AUTHENTICATIONFAILED"
    assert len(await stored_events(client, "shared", "authenticationError")) == 1
    assert await stored_events(client, "my-account", "authenticationError") == []
    assert [e["account"] for e in logs if e["event"] == REFUSED] == ["shared"]
    assert [e["account"] for e in logs if e["event"] == REFRESHED] == ["my-account"]
