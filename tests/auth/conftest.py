"""Fixtures for the OAuth2 tests: the sandbox over https and a relay pointed at it."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from relay.api.keys import TOKENS
from relay.auth.tokens import TokenManager
from relay.config import MicrosoftSettings, Settings
from relay.sandbox.browser import sign_in
from relay.sandbox.server import RunningSandbox, start_sandbox
from relay.sandbox.signing import Signer
from relay.sandbox.state import SandboxState
from tests.api.helpers import call
from tests.conftest import MakeClient

MAIN = "main@example.com"
SHARED = "shared@example.com"
HTML = {"Accept": "text/html"}
DONE = "https://app.example.com/done?from=relay"
# The seed payload of a shared mailbox, verbatim.
SHARED_PAYLOAD: dict[str, Any] = {
    "account": "shared",
    "name": "Shared Account",
    "email": "shared@example.com",
    "oauth2": {"auth": {"delegatedUser": "shared@example.com", "delegatedAccount": "my-account"}},
}


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these override the verify= that msal passes.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="session")
def signer() -> Signer:
    """One RSA key for the whole run; generating one per test is slow."""
    return Signer()


@pytest.fixture
async def sandbox(tmp_path: Path, signer: Signer) -> AsyncIterator[RunningSandbox]:
    """A seeded sandbox on a free port of 127.0.0.1."""
    running = await start_sandbox(
        "127.0.0.1", 0, tmp_path / "sandbox", seed=True, state=SandboxState(signer=signer)
    )
    yield running
    await running.close()


@pytest.fixture
async def http(sandbox: RunningSandbox) -> AsyncIterator[aiohttp.ClientSession]:
    """The user's browser (and the admin's client): trusts the sandbox's CA."""
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(sandbox.ca_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


@pytest.fixture
def ms_settings(settings: Settings, sandbox: RunningSandbox) -> Settings:
    """``settings`` with the Microsoft endpoints pointed at the sandbox."""
    return with_microsoft(settings, sandbox)


def with_microsoft(settings: Settings, sandbox: RunningSandbox, **extra: Any) -> Settings:
    """``settings`` talking to ``sandbox`` (``extra``: more MicrosoftSettings)."""
    return dataclasses.replace(
        settings,
        microsoft=MicrosoftSettings(
            authority_host=sandbox.url, ca_bundle=str(sandbox.ca_path), **extra
        ),
    )


@pytest.fixture
async def relay(make_client: MakeClient, ms_settings: Settings) -> TestClient:
    """The relay, talking to the sandbox."""
    return await make_client(ms_settings)


def tokens_of(client: TestClient) -> TokenManager:
    """The relay's token manager."""
    return client.app[TOKENS]


async def add_sandbox_app(client: TestClient, sandbox: RunningSandbox, **overrides: Any) -> str:
    """Register the sandbox's seeded application with the relay; return its id."""
    assert sandbox.seed is not None
    body = {
        "name": "Sandbox",
        "provider": "outlook",
        "clientId": sandbox.seed.client_id,
        "clientSecret": sandbox.seed.client_secret,
        "authority": sandbox.seed.tenant_id,
        "redirectUrl": sandbox.seed.redirect_uri,
        "baseScopes": "imap",
        **overrides,
    }
    return str((await call(client, "POST", "/v1/oauth2", body))["id"])


def local(url: str) -> str:
    """The path and query of a relay URL (the test client knows the host)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def form_link(client: TestClient, app_id: str, **form: Any) -> str:
    """POST /v1/authentication/form; the consent link."""
    body = {"account": "my-account", "name": "Main", "redirectUrl": DONE, "type": app_id, **form}
    result = await call(client, "POST", "/v1/authentication/form", body)
    return str(result["url"])


async def open_link(client: TestClient, url: str) -> str:
    """Open a consent link in the browser: the Microsoft sign-in address it redirects to."""
    resp = await client.get(local(url), allow_redirects=False, headers=HTML)
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def sign_in_at(
    http: aiohttp.ClientSession, auth_uri: str, *, accept: bool = True
) -> dict[str, str]:
    """The user signs in at the sandbox; what the form_post page sends to /oauth."""
    return await sign_in(http, auth_uri, MAIN, "sandbox-password", accept=accept)


async def post_back(client: TestClient, answer: dict[str, str]) -> aiohttp.ClientResponse:
    """The browser posts the sign-in answer to /oauth (form_post)."""
    return await client.post("/oauth", data=answer, allow_redirects=False, headers=HTML)


async def consent(
    client: TestClient, http: aiohttp.ClientSession, link: str
) -> aiohttp.ClientResponse:
    """The whole browser part: open the link, sign in, post back; the /oauth response."""
    auth_uri = await open_link(client, link)
    answer = await sign_in_at(http, auth_uri)
    return await post_back(client, answer)


async def consented_main(
    client: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox, **app: Any
) -> str:
    """Register the app and consent as the main user for ``my-account``; the app id."""
    app_id = await add_sandbox_app(client, sandbox, **app)
    resp = await consent(client, http, await form_link(client, app_id))
    assert resp.status == 302, await resp.text()
    return app_id


async def sandbox_admin(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, path: str, body: Any = None
) -> Any:
    """Call the sandbox's admin API."""
    async with http.post(f"{sandbox.url}/sandbox/{path}", json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def introspect(http: aiohttp.ClientSession, sandbox: RunningSandbox, token: str) -> Any:
    """What the sandbox says a token grants."""
    return await sandbox_admin(http, sandbox, "introspect", {"token": token})


async def grant_current_token(
    client: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox, dovecot: Any
) -> None:
    """Tell Dovecot (``tests.peers.dovecot``) what the sandbox says the main account's token
    may open: the main mailbox and the shared ones."""
    user, token = await tokens_of(client).access_token("my-account")
    granted = await introspect(http, sandbox, token)
    assert user == MAIN
    assert granted["active"] is True
    others = [m for m in granted["mailboxes"] if m != MAIN]
    await asyncio.to_thread(dovecot.grant, token, MAIN, others)


async def grant_until_connected(
    client: TestClient,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    dovecot: Any,
    within: float = 20.0,
) -> None:
    """:func:`grant_current_token` for a main account that is watched itself: it connects as
    soon as consent completes, possibly before the grant, and, refused, refreshes its token
    and waits ``imap.auth_retry``. Grant the token it holds now and ask it to reconnect,
    until it is connected."""
    async with asyncio.timeout(within):
        while True:
            await grant_current_token(client, http, sandbox, dovecot)
            state = (await call(client, "GET", "/v1/account/my-account"))["state"]
            if state == "connected":
                return
            if state == "authenticationError":
                await call(client, "PUT", "/v1/account/my-account/reconnect", {"reconnect": True})
            await asyncio.sleep(0.2)
