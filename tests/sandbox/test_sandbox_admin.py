"""The loopback-only admin API: users, grants, apps, revocation, clock, introspection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.sandbox.admin import Handler
from relay.sandbox.app import create_sandbox_app
from relay.sandbox.server import RunningSandbox
from relay.sandbox.signing import Signer
from relay.sandbox.state import SandboxClock, SandboxState

from .conftest import IMAP, MsalClient


async def _post(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, path: str, body: Any
) -> tuple[int, Any]:
    data = body if isinstance(body, str) else json.dumps(body)
    async with http.post(f"{sandbox.url}/sandbox/{path}", data=data) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def _snapshot(sandbox: RunningSandbox) -> dict[str, Any]:
    text = await asyncio.to_thread(sandbox.grants_path.read_text)
    snapshot: dict[str, Any] = json.loads(text)
    return snapshot


def _counts(state: SandboxState) -> tuple[int, int, int]:
    return len(state.users), len(state.grants), len(state.apps)


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("users", "not json", 400, "body"),
        ("users", ["a list"], 400, "body"),
        ("users", {"password": "x"}, 400, "email"),
        ("users", {"email": "no-at-sign", "password": "x"}, 400, "email"),
        ("users", {"email": "new@example.com"}, 400, "password"),
        ("users", {"email": "new@example.com", "password": 5}, 400, "password"),
        ("users", {"email": "new@example.com", "password": "x", "shared": "yes"}, 400, "shared"),
        ("users", {"email": "box@example.com", "password": "x", "shared": True}, 400, "password"),
        ("users", {"email": "MAIN@example.com", "password": "x"}, 409, "email"),
        ("grants", {"user": "nobody@example.com", "mailbox": "shared@example.com"}, 404, "user"),
        ("grants", {"user": "main@example.com", "mailbox": "nobody@example.com"}, 404, "mailbox"),
        ("grants", {"user": "main@example.com", "mailbox": "main@example.com"}, 400, "mailbox"),
        ("grants", {"user": "shared@example.com", "mailbox": "main@example.com"}, 400, "user"),
        (
            "grants",
            {"user": "main@example.com", "mailbox": "shared@example.com", "sendAs": 1},
            400,
            "sendAs",
        ),
        ("apps", {"clientSecret": "s", "redirectUris": ["https://a.example/cb"]}, 400, "clientId"),
        ("apps", {"clientId": "c", "redirectUris": ["https://a.example/cb"]}, 400, "clientSecret"),
        ("apps", {"clientId": "c", "clientSecret": "s", "redirectUris": []}, 400, "redirectUris"),
        (
            "apps",
            {"clientId": "c", "clientSecret": "s", "redirectUris": ["http://a.example/cb"]},
            400,
            "redirectUris",
        ),
        (
            "apps",
            {"clientId": "c", "clientSecret": "s", "redirectUris": ["/relative"]},
            400,
            "redirectUris",
        ),
        (
            "apps",
            {
                "clientId": "c",
                "clientSecret": "s",
                "redirectUris": ["https://a.example/cb"],
                "applicationPermissions": ["Mail.Everything"],
            },
            400,
            "applicationPermissions",
        ),
        (
            "apps",
            {
                "clientId": "c",
                "clientSecret": "s",
                "redirectUris": ["https://a.example/cb"],
                "tenant": "other.example",
            },
            400,
            "tenant",
        ),
        ("clock", {"advanceSeconds": -5}, 400, "advanceSeconds"),
        ("clock", {"advanceSeconds": True}, 400, "advanceSeconds"),
        ("clock", {"advanceSeconds": "60"}, 400, "advanceSeconds"),
        ("introspect", {}, 400, "token"),
        ("users/nobody@example.com/revoke", {}, 404, "user"),
        ("tokens/revoke", {}, 400, "token"),
        ("tokens/revoke", {"token": 7}, 400, "token"),
        ("tokens/revoke", {"token": "made-up"}, 404, "token"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    path: str,
    body: Any,
    status: int,
    field: str,
) -> None:
    """Each malformed admin request gets a JSON error naming the field; the tenant is unchanged."""
    before = _counts(sandbox.state)
    clock = sandbox.state.clock
    assert isinstance(clock, SandboxClock)

    got, error = await _post(http, sandbox, path, body)

    assert got == status
    assert error["statusCode"] == status
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert _counts(sandbox.state) == before
    assert clock.offset == 0


async def test_users_grants_and_apps_are_created(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Created users, shared mailboxes, grants and apps show up in GET /sandbox/tenant."""
    status, _ = await _post(http, sandbox, "users", {"email": "Ann@Example.com", "password": "pw"})
    assert status == 201
    status, box = await _post(
        http, sandbox, "users", {"email": "team@example.com", "shared": True, "displayName": "Team"}
    )
    assert (status, box["shared"], box["displayName"]) == (201, True, "Team")
    status, grant = await _post(
        http, sandbox, "grants", {"user": "ann@example.com", "mailbox": "team@example.com"}
    )
    assert grant == {
        "user": "ann@example.com",
        "mailbox": "team@example.com",
        "fullAccess": True,
        "sendAs": False,
        "sendOnBehalf": False,
    }
    status, app = await _post(
        http,
        sandbox,
        "apps",
        {
            "clientId": "app-2",
            "clientSecret": "s3cret",
            "redirectUris": ["https://relay.example/oauth"],
            "tenant": "example.com",
            "applicationPermissions": [
                "mail.read",
                "https://outlook.office365.com/IMAP.AccessAsApp",
            ],
        },
    )
    assert status == 201
    assert app["applicationPermissions"] == [
        "https://graph.microsoft.com/Mail.Read",
        "https://outlook.office.com/IMAP.AccessAsApp",
    ]

    async with http.get(f"{sandbox.url}/sandbox/tenant") as response:
        tenant = await response.json()
    users = {u["email"]: u for u in tenant["users"]}
    assert users["ann@example.com"]["mailboxes"] == ["ann@example.com", "team@example.com"]
    assert users["team@example.com"]["mailboxes"] == []
    assert "s3cret" not in json.dumps(tenant)
    assert "pw" not in json.dumps(users)


async def test_introspection_follows_grants(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Introspection lists the owner's mailboxes and Send As as the grants are now."""
    token = (await client.sign_in([IMAP]))["access_token"]

    _, before = await _post(http, sandbox, "introspect", {"token": token})
    async with http.delete(
        f"{sandbox.url}/sandbox/grants",
        json={"user": "main@example.com", "mailbox": "shared@example.com"},
    ) as response:
        assert response.status == 204
    async with http.get(f"{sandbox.url}/sandbox/introspect", params={"token": token}) as response:
        after = await response.json()

    assert before["active"] is True
    assert before["user"] == "main@example.com"
    assert before["resource"] == "https://outlook.office.com"
    assert before["scopes"] == ["IMAP.AccessAsUser.All"]
    assert before["mailboxes"] == ["main@example.com", "shared@example.com"]
    assert before["sendAs"] == ["main@example.com", "shared@example.com"]
    assert after["mailboxes"] == ["main@example.com"]
    assert after["sendAs"] == ["main@example.com"]


async def test_introspecting_an_unknown_token(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A token the sandbox never issued is inactive."""
    status, body = await _post(http, sandbox, "introspect", {"token": "made-up"})

    assert (status, body) == (200, {"active": False, "reason": "unknown"})


async def test_revoke_keeps_access_tokens_unless_asked(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Revoking leaves access tokens valid until expiry; ?accessTokens=true cuts them off."""
    token = (await client.sign_in([IMAP]))["access_token"]

    _, plain = await _post(http, sandbox, "users/main@example.com/revoke", {})
    still = sandbox.state.introspect(token)["active"]
    _, hard = await _post(http, sandbox, "users/main@example.com/revoke?accessTokens=true", {})

    assert plain == {
        "user": "main@example.com",
        "refreshTokensRevoked": 1,
        "accessTokensRevoked": 0,
    }
    assert still is True
    assert hard["accessTokensRevoked"] == 1
    assert sandbox.state.introspect(token) == {"active": False, "reason": "revoked"}


async def test_one_access_token_is_revoked_and_the_refresh_token_still_works(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """tokens/revoke cuts off that access token alone (introspection, snapshot); the refresh
    token mints a new one that is valid."""
    signed_in = await client.sign_in([IMAP])
    token = signed_in["access_token"]

    status, revoked = await _post(http, sandbox, "tokens/revoke", {"token": token})
    refreshed = await client.refresh(signed_in["refresh_token"], [IMAP])

    assert (status, revoked) == (
        200,
        {"user": "main@example.com", "resource": "https://outlook.office.com", "revoked": True},
    )
    assert sandbox.state.introspect(token) == {"active": False, "reason": "revoked"}
    snapshot = await _snapshot(sandbox)
    assert token not in snapshot
    assert sandbox.state.introspect(refreshed["access_token"])["active"] is True
    assert refreshed["access_token"] in snapshot


async def test_clock_advance_expires_access_tokens_and_updates_snapshot(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Advancing the clock past an hour expires the access token, in introspection and the file."""
    token = (await client.sign_in([IMAP]))["access_token"]
    snapshot = await _snapshot(sandbox)

    status, clock = await _post(http, sandbox, "clock", {"advanceSeconds": 3600})

    assert status == 200
    assert clock["offsetSeconds"] == 3600
    assert snapshot[token]["owner"] == "main@example.com"
    assert snapshot[token]["mailboxes"] == ["main@example.com", "shared@example.com"]
    assert sandbox.state.introspect(token) == {"active": False, "reason": "expired"}
    assert token not in await _snapshot(sandbox)


async def test_grants_snapshot_follows_grant_changes(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A new grant is in the snapshot file by the time the admin call returns."""
    token = (await client.sign_in([IMAP]))["access_token"]
    await _post(http, sandbox, "users", {"email": "other@example.com", "shared": True})

    await _post(
        http, sandbox, "grants", {"user": "main@example.com", "mailbox": "other@example.com"}
    )

    entry = (await _snapshot(sandbox))[token]
    assert entry["mailboxes"] == ["main@example.com", "other@example.com", "shared@example.com"]
    assert entry["sendAs"] == ["main@example.com", "shared@example.com"]
    assert entry["scopes"] == ["IMAP.AccessAsUser.All"]


@web.middleware
async def _from_elsewhere(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Stands in for a peer on another machine: the test server itself only listens locally.
    return await handler(request.clone(remote="192.0.2.10"))


async def test_admin_api_refuses_non_loopback_peers(aiohttp_client: Any, signer: Signer) -> None:
    """A peer that is not on loopback gets 403 from /sandbox/ and creates nothing."""
    state = SandboxState(signer=signer)
    app = create_sandbox_app(state)
    app.middlewares.insert(0, _from_elsewhere)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)

    refused = await client.post("/sandbox/users", json={"email": "x@example.com", "password": "p"})
    discovery = await client.get(f"/{state.tenant_id}/v2.0/.well-known/openid-configuration")

    assert refused.status == 403
    assert (await refused.json())["code"] == "Forbidden"
    assert state.users == {}
    assert discovery.status == 200
