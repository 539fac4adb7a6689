"""Fixtures that start the sandbox on a free port and drive it with msal and aiohttp."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msal
import pytest
from blockbuster import blockbuster_ctx

from relay.sandbox.browser import sign_in
from relay.sandbox.server import RunningSandbox, start_sandbox
from relay.sandbox.signing import Signer
from relay.sandbox.state import SandboxState

from .graph_helpers import Graph, Receiver, mint

IMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"
SMTP = "https://outlook.office.com/SMTP.Send"
MAIL_READ = "https://graph.microsoft.com/Mail.Read"
MAIL_SEND_SHARED = "https://graph.microsoft.com/Mail.Send.Shared"


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
    """A seeded sandbox on a free port; blocking calls on the event loop fail the test."""
    running = await start_sandbox(
        "127.0.0.1", 0, tmp_path, seed=True, state=SandboxState(signer=signer)
    )
    with blockbuster_ctx():
        yield running
    await running.close()


@pytest.fixture
async def http(sandbox: RunningSandbox) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session that trusts the sandbox's CA."""
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(sandbox.ca_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


class MsalClient:
    """An msal confidential client pointed at the sandbox, called from worker threads."""

    def __init__(self, app: msal.ConfidentialClientApplication, http: aiohttp.ClientSession):
        self.app = app
        self.http = http

    async def flow(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]:
        """Start an auth code flow (form_post, as msal recommends)."""
        kwargs.setdefault("redirect_uri", "http://127.0.0.1:3000/oauth")
        kwargs.setdefault("response_mode", "form_post")
        return await asyncio.to_thread(self.app.initiate_auth_code_flow, scopes, **kwargs)

    async def sign_in(
        self,
        scopes: list[str],
        *,
        token_scopes: list[str] | None = None,
        email: str = "main@example.com",
        password: str = "sandbox-password",
    ) -> dict[str, Any]:
        """The whole delegated flow: flow, sign-in page, form, code redemption."""
        flow = await self.flow(scopes)
        response = await sign_in(self.http, flow["auth_uri"], email, password)
        return await self.redeem(flow, response, token_scopes)

    async def redeem(
        self, flow: dict[str, Any], response: dict[str, str], scopes: list[str] | None = None
    ) -> dict[str, Any]:
        """msal's acquire_token_by_auth_code_flow."""
        kwargs = {"scopes": scopes} if scopes is not None else {}
        result: dict[str, Any] = await asyncio.to_thread(
            self.app.acquire_token_by_auth_code_flow, flow, response, **kwargs
        )
        return result

    async def refresh(self, refresh_token: str, scopes: list[str]) -> dict[str, Any]:
        """msal's acquire_token_by_refresh_token."""
        result: dict[str, Any] = await asyncio.to_thread(
            self.app.acquire_token_by_refresh_token, refresh_token, scopes
        )
        return result


@pytest.fixture
def msal_client(sandbox: RunningSandbox, http: aiohttp.ClientSession) -> Iterator[Any]:
    """Factory of msal clients (the seeded app by default); closes their sessions after."""
    apps: list[msal.ConfidentialClientApplication] = []
    assert sandbox.seed is not None
    seed = sandbox.seed

    async def make(
        *,
        client_id: str = seed.client_id,
        secret: str = seed.client_secret,
        authority: str | None = None,
        **kwargs: Any,
    ) -> MsalClient:
        kwargs.setdefault("instance_discovery", False)
        app = await asyncio.to_thread(
            msal.ConfidentialClientApplication,
            client_id,
            client_credential=secret,
            authority=authority or f"{sandbox.url}/{seed.tenant_id}",
            verify=str(sandbox.ca_path),
            **kwargs,
        )
        apps.append(app)
        return MsalClient(app, http)

    yield make
    for app in apps:
        app.http_client.close()


@pytest.fixture
async def client(msal_client: Any) -> MsalClient:
    """An msal client for the seeded app."""
    made: MsalClient = await msal_client()
    return made


@pytest.fixture
async def receivers(sandbox: RunningSandbox) -> AsyncIterator[Callable[[], Awaitable[Receiver]]]:
    """Factory of notification receivers on loopback (http URLs allowed for the test)."""
    sandbox.state.allow_http_notifications = True
    started: list[Receiver] = []

    async def make() -> Receiver:
        receiver = Receiver()
        await receiver.start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        await receiver.close()


@pytest.fixture
async def receiver(receivers: Callable[[], Awaitable[Receiver]]) -> Receiver:
    """One notification receiver."""
    return await receivers()


@pytest.fixture
def graph(sandbox: RunningSandbox, http: aiohttp.ClientSession) -> Graph:
    """A Graph client with a delegated token of main@example.com (the relay's scopes)."""
    return Graph(http, sandbox, mint(sandbox))
