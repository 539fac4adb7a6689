"""Helpers for the Graph tests: tokens, a Graph client, notification receivers."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from relay.sandbox.browser import sign_in
from relay.sandbox.scopes import GRAPH
from relay.sandbox.server import RunningSandbox

MAIN = "main@example.com"
SHARED = "shared@example.com"
# What the relay asks for in the shared-mailbox Graph mode, plus Mail.Read for subscriptions.
RELAY_SCOPES = ("Mail.Read", "Mail.ReadWrite.Shared", "Mail.Send.Shared", "User.ReadBasic.All")


def mint(
    sandbox: RunningSandbox,
    *,
    user: str | None = MAIN,
    scopes: Iterable[str] = RELAY_SCOPES,
    roles: Iterable[str] = (),
    resource: str = GRAPH,
) -> str:
    """An access token issued by the sandbox, as its token endpoint would issue it."""
    state = sandbox.state
    assert sandbox.seed is not None
    app = state.apps[sandbox.seed.client_id]
    token = state.new_access_token(
        app,
        issuer=sandbox.url,
        resource=resource,
        user=state.users[user] if user is not None else None,
        scopes=scopes if user is not None else (),
        roles=roles,
    )
    return token.value


def app_only(sandbox: RunningSandbox, *roles: str) -> str:
    """An app-only token with ``roles`` (the seed's roles by default)."""
    return mint(sandbox, user=None, roles=roles or ("Mail.ReadWrite", "Mail.Send"))


class Graph:
    """Calls the sandbox's Graph endpoints with one bearer token."""

    def __init__(self, http: aiohttp.ClientSession, sandbox: RunningSandbox, token: str) -> None:
        self.http = http
        self.sandbox = sandbox
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        """``(status, JSON body or None)``; ``path`` is below /v1.0/ or an absolute URL."""
        status, _, result = await self.exchange(method, path, body, headers=headers, token=token)
        return status, result

    async def exchange(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, CIMultiDictProxy[str], Any]:
        """``(status, response headers, JSON body or None)``."""
        url = path if path.startswith("https://") else f"{self.sandbox.url}/v1.0/{path}"
        sent = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        data = None if body is None else json.dumps(body)
        if data is not None:
            sent["Content-Type"] = "application/json"
        async with self.http.request(
            method, URL(url, encoded=True), data=data, headers=sent
        ) as response:
            text = await response.text()
            return response.status, response.headers, json.loads(text) if text else None

    async def raw(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """``(status, response headers, body bytes)``; ``data`` is sent as it is."""
        url = path if path.startswith("https://") else f"{self.sandbox.url}/v1.0/{path}"
        sent = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        async with self.http.request(
            method, URL(url, encoded=True), data=data, headers=sent
        ) as response:
            return response.status, response.headers, await response.read()

    async def exchange_bytes(
        self, path: str, data: bytes, *, content_type: str
    ) -> tuple[int, CIMultiDictProxy[str], Any]:
        """POST ``data`` as it is with ``content_type``: ``(status, headers, JSON or None)``."""
        status, headers, body = await self.raw(
            "POST", path, data, headers={"Content-Type": content_type}
        )
        return status, headers, json.loads(body) if body else None

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """The JSON of a 2xx answer; fails the test otherwise."""
        status, result = await self.call(method, path, body, **kwargs)
        assert 200 <= status < 300, (status, result)
        return result

    async def error(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, str]:
        """``(status, error code)`` of an error answer."""
        status, result = await self.call(method, path, body, **kwargs)
        assert status >= 400, (status, result)
        return status, result["error"]["code"]


async def admin(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, method: str, path: str, body: Any = None
) -> Any:
    """Call the admin API; fails the test on an error answer.

    The body goes out as a stream: a message delivered as MIME may be tens of megabytes.
    """
    data = None if body is None else io.BytesIO(json.dumps(body).encode())
    headers = {} if body is None else {"Content-Type": "application/json"}
    async with http.request(
        method, f"{sandbox.url}/sandbox/{path}", data=data, headers=headers
    ) as response:
        text = await response.text()
        assert response.status < 300, (response.status, text)
        return json.loads(text) if text else None


async def deliver(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    mailbox: str = MAIN,
    folder: str = "inbox",
    **fields: Any,
) -> dict[str, Any]:
    """Deliver a message through the admin API."""
    body = {"folder": folder, "from": "alice@example.net", "to": [mailbox], **fields}
    body.setdefault("subject", "Hello")
    message: dict[str, Any] = await admin(
        http, sandbox, "POST", f"mailboxes/{mailbox}/messages", body
    )
    return message


INBOX_RESOURCE = "me/mailFolders('Inbox')/messages"


def expires_in(sandbox: RunningSandbox, minutes: float) -> str:
    """An ``expirationDateTime`` ``minutes`` ahead of the sandbox clock."""
    moment = datetime.fromtimestamp(sandbox.state.now(), UTC) + timedelta(minutes=minutes)
    return moment.isoformat().replace("+00:00", "Z")


def subscription_body(sandbox: RunningSandbox, url: str, **fields: Any) -> dict[str, Any]:
    """A valid ``POST /subscriptions`` body for the signed-in user's inbox, one hour long."""
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": INBOX_RESOURCE,
        "expirationDateTime": expires_in(sandbox, 60),
        "clientState": "secret-state",
    }
    body.update(fields)
    return body


Answer = Callable[[dict[str, Any]], Awaitable[int] | int]


class Receiver:
    """A notification endpoint on 127.0.0.1 that answers Graph's validation handshake.

    ``validation`` picks how the handshake is answered: ``echo`` (correctly), ``raw`` (the
    still-encoded token), ``json`` (right token, wrong content type), ``forbidden`` (403),
    ``slow`` (after ``delay`` seconds). ``answer`` decides the status of each notification
    POST (202 by default) and may do things on the way, such as moving the sandbox clock.
    """

    def __init__(self) -> None:
        self.validation = "echo"
        self.delay = 0.0
        self.answer: Answer = lambda _: 202
        self.validations: list[str] = []
        self.posts: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """Every notification received, across POSTs."""
        return [item for post in self.posts for item in post["value"]]

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            self.validations.append(token)
            if self.validation == "slow":
                await asyncio.sleep(self.delay)
            if self.validation == "raw":
                raw = request.rel_url.raw_query_string.partition("validationToken=")[2]
                return web.Response(text=raw, content_type="text/plain")
            if self.validation == "json":
                return web.json_response(token)
            if self.validation == "forbidden":
                return web.Response(status=403)
            return web.Response(text=token, content_type="text/plain")
        body = await request.json()
        self.posts.append(body)
        status = self.answer(body)
        if not isinstance(status, int):
            status = await status
        return web.Response(status=status)

    async def start(self, path: str = "/notify") -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post(path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{path}"

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


async def consent_graph_account(
    relay: aiohttp.ClientSession,
    browser: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    account: str,
) -> None:
    """Through a running relay's API (``relay`` sends the API token, relative URLs):
    register the sandbox application for Graph and consent as the main user for
    ``account``. ``browser`` trusts the sandbox's CA."""
    seed = sandbox.seed
    assert seed is not None
    app = {
        "name": "Sandbox",
        "provider": "outlook",
        "clientId": seed.client_id,
        "clientSecret": seed.client_secret,
        "authority": seed.tenant_id,
        "redirectUrl": seed.redirect_uri,
        "baseScopes": "api",
    }
    async with relay.post("/v1/oauth2", json=app) as r:
        app_id = (await r.json())["id"]
    form = {
        "account": account,
        "name": "Main",
        "type": app_id,
        "redirectUrl": "https://app.example/",
    }
    async with relay.post("/v1/authentication/form", json=form) as r:
        link = (await r.json())["url"]
    async with browser.get(link, allow_redirects=False, headers={"Accept": "text/html"}) as r:
        authorize = r.headers["Location"]
    answer = await sign_in(browser, authorize, MAIN, "sandbox-password")
    async with relay.post("/oauth", data=answer, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
