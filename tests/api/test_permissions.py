"""Enforcement of token grants, generated from the route table: every /v1 route declares its
permission, a token without it gets 403, an account-bound token sees its account only."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.api.endpoint import Endpoint
from relay.api.keys import STORE
from relay.api.middleware import ACCOUNT_NOT_FOUND
from relay.api.routes import endpoints
from relay.auth.api_tokens import new_id, new_token
from relay.auth.grants import ACTIONS, GROUPS, Grant, Permission
from relay.config import SendSettings, Settings
from relay.store import tokens
from relay.store.engine import now_ms
from tests.api.helpers import add_app, add_main, call
from tests.conftest import MakeClient

_PARAM = re.compile(r"\{(\w+)\}")


def imap_account(account: str) -> dict[str, Any]:
    """An IMAP account whose server refuses connections at once (port 1)."""
    return {
        "account": account,
        "name": account,
        "email": f"{account}@example.com",
        "imap": {
            "host": "127.0.0.1",
            "port": 1,
            "secure": False,
            "auth": {"user": f"{account}@example.com", "pass": "imap-pass"},
        },
        "smtp": {
            "host": "127.0.0.1",
            "port": 1,
            "auth": {"user": f"{account}@example.com", "pass": "smtp-pass"},
        },
    }


def guarded() -> list[Endpoint]:
    return [ep for ep in endpoints() if not ep.public and ep.path.startswith("/v1")]


def path_of(ep: Endpoint, account: str) -> str:
    """The route's path with ``{account}`` filled in and any other parameter made up."""
    return _PARAM.sub(lambda m: account if m[1] == "account" else "x1", ep.path)


def everything_but(permission: Permission) -> dict[str, frozenset[str]]:
    return {g: frozenset(a for a in ACTIONS if Permission(g, a) != permission) for g in GROUPS}


async def mint(client: TestClient, **grant: Any) -> str:
    """Store a token with ``grant`` (Grant's fields) and return it."""
    token = new_token()
    async with client.server.app[STORE].write() as conn:
        await tokens.create(
            conn, token, Grant(token_id=new_id(), **grant), description="test", source="api"
        )
    return token


async def send(
    client: TestClient, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    resp = await client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    if resp.content_type == "text/event-stream":
        # An event stream does not end: its status is the answer.
        resp.close()
        return resp.status, ""
    payload = await resp.json() if resp.content_type == "application/json" else await resp.text()
    return resp.status, payload


@pytest.fixture
def quiet(settings: Settings) -> Settings:
    """Submits are queued only: nothing tries to reach an SMTP server."""
    return dataclasses.replace(settings, send=SendSettings(deliver=False))


def test_every_route_declares_its_permission() -> None:
    """A /v1 route without a declared permission (or a public route with one) fails the build."""
    for ep in endpoints():
        if ep.public:
            assert ep.permission is None, f"{ep.method} {ep.path} is public"
        elif ep.path.startswith("/v1"):
            assert ep.permission is not None, f"{ep.method} {ep.path} declares no permission"


# The permission check is the middleware's, before any store work: one engine is enough for
# the whole matrix (the tests below run on both).
@pytest.mark.parametrize("engine_name", ["sqlite"])
@pytest.mark.parametrize("ep", guarded(), ids=lambda ep: f"{ep.method} {ep.path}")
async def test_matrix(make_client: MakeClient, quiet: Settings, ep: Endpoint) -> None:
    """Without the route's permission: 403 naming it; bound to another account: the 404 of
    a missing account; with exactly the permission (on its own account): past the check."""
    assert ep.permission is not None
    client = await make_client(quiet)
    for account in ("mine", "other"):
        await call(client, "POST", "/v1/account", imap_account(account))

    lacking = await mint(client, permissions=everything_but(ep.permission))
    status, body = await send(client, ep.method, path_of(ep, "mine"), lacking)
    assert status == 403, body
    assert str(ep.permission) in body["message"]

    exact = {ep.permission.group: frozenset({ep.permission.action})}
    bound = await mint(client, account="mine", permissions=exact)
    if "{account}" in ep.path:
        foreign = await send(client, ep.method, path_of(ep, "other"), bound)
        missing = await send(client, ep.method, path_of(ep, "nobody"), bound)
        assert foreign[0] == 404, foreign
        assert foreign == missing
        assert foreign[1]["message"] == ACCOUNT_NOT_FOUND

    status, body = await send(client, ep.method, path_of(ep, "mine"), bound)
    assert status not in (401, 403), body
    assert not (status == 404 and body["message"] == ACCOUNT_NOT_FOUND), body


@pytest.mark.parametrize(
    "ep",
    [ep for ep in guarded() if "{account}" not in ep.path],
    ids=lambda ep: f"{ep.method} {ep.path}",
)
async def test_bound_token_needs_the_group_named(
    make_client: MakeClient, quiet: Settings, ep: Endpoint
) -> None:
    """A route without an account in its path is refused to an account-bound token whose
    permissions do not name the route's group (here: all permissions, unnamed)."""
    client = await make_client(quiet)
    await call(client, "POST", "/v1/account", imap_account("mine"))
    token = await mint(client, account="mine")
    status, body = await send(client, ep.method, path_of(ep, "mine"), token)
    assert status == 403, body
    assert body["field"] == "permissions"


async def test_scope_api_is_needed(make_client: MakeClient, quiet: Settings) -> None:
    """A token with every permission but only the metrics scope may not use /v1."""
    client = await make_client(quiet)
    token = await mint(client, scopes=frozenset({"metrics"}))
    status, body = await send(client, "GET", "/v1/accounts", token)
    assert status == 403
    assert body["field"] == "scopes"


async def test_expired_token_is_refused(make_client: MakeClient, quiet: Settings) -> None:
    """A token whose time is over gets 401, also after it was accepted and cached."""
    client = await make_client(quiet)
    token = await mint(client, expires_ms=now_ms() + 300)
    assert (await send(client, "GET", "/v1/accounts", token))[0] == 200
    await asyncio.sleep(0.4)
    status, body = await send(client, "GET", "/v1/accounts", token)
    assert status == 401
    assert "expired" in body["message"]


async def test_unknown_token_is_refused(make_client: MakeClient, quiet: Settings) -> None:
    """A token that was never stored gets 401."""
    client = await make_client(quiet)
    status, body = await send(client, "GET", "/v1/accounts", new_token())
    assert status == 401
    assert body["code"] == "Unauthorized"


async def test_query_token_still_works(make_client: MakeClient, quiet: Settings) -> None:
    """``?access_token=`` carries a scoped token as EmailEngine's clients send it."""
    client = await make_client(quiet, token=None)
    token = await mint(client, permissions={"account": frozenset({"read"})})
    resp = await client.get(f"/v1/accounts?access_token={token}")
    assert resp.status == 200
    resp = await client.get(f"/v1/settings?access_token={token}")
    assert resp.status == 403


async def test_account_list_is_filtered(make_client: MakeClient, quiet: Settings) -> None:
    """GET /v1/accounts shows a bound token its account, and with ``shared`` the shared
    mailboxes delegated from it; never another account."""
    client = await make_client(quiet)
    app_id = await add_app(client)
    await add_main(client, app_id, "mine")
    await call(client, "POST", "/v1/account", imap_account("other"))
    shared = {
        "account": "team",
        "name": "Team",
        "email": "team@example.com",
        "oauth2": {"auth": {"delegatedUser": "team@example.com", "delegatedAccount": "mine"}},
    }
    await call(client, "POST", "/v1/account", shared)
    read = {"account": frozenset({"read"})}

    async def listed(token: str) -> list[str]:
        status, body = await send(client, "GET", "/v1/accounts", token)
        assert status == 200, body
        assert body["total"] == len(body["accounts"])
        return sorted(a["account"] for a in body["accounts"])

    assert await listed(await mint(client, account="mine", permissions=read)) == ["mine"]
    with_shared = await mint(client, account="mine", shared=True, permissions=read)
    assert await listed(with_shared) == ["mine", "team"]
    assert await listed(await mint(client, permissions=read)) == ["mine", "other", "team"]
    # The shared mailbox is reachable by path only with `shared`.
    only_mine = await mint(client, account="mine", permissions=read)
    assert (await send(client, "GET", "/v1/account/team", only_mine))[0] == 404
    assert (await send(client, "GET", "/v1/account/team", with_shared))[0] == 200


async def test_outbox_is_filtered(make_client: MakeClient, quiet: Settings) -> None:
    """A bound token lists, reads and deletes only its own account's queued messages; another
    account's answers 404 like an unknown queue id."""
    client = await make_client(quiet)
    queued = {}
    for account in ("mine", "other"):
        await call(client, "POST", "/v1/account", imap_account(account))
        answer = await call(
            client,
            "POST",
            f"/v1/account/{account}/submit",
            {
                "from": {"address": f"{account}@example.com"},
                "to": [{"address": "rcpt@example.com"}],
                "subject": "hello",
                "text": "hello",
            },
        )
        queued[account] = answer["queueId"]
    token = await mint(
        client,
        account="mine",
        permissions={"outbox": frozenset({"read", "destructive"})},
    )
    status, body = await send(client, "GET", "/v1/outbox", token)
    assert status == 200
    assert [m["queueId"] for m in body["messages"]] == [queued["mine"]]
    assert body["total"] == 1
    status, body = await send(client, "GET", "/v1/outbox?account=other", token)
    assert (status, body["messages"]) == (200, [])

    foreign = await send(client, "GET", f"/v1/outbox/{queued['other']}", token)
    unknown = await send(client, "GET", "/v1/outbox/nope", token)
    assert foreign[0] == unknown[0] == 404
    assert foreign[1]["code"] == unknown[1]["code"]
    assert (await send(client, "DELETE", f"/v1/outbox/{queued['other']}", token))[0] == 404
    assert (await send(client, "GET", f"/v1/outbox/{queued['mine']}", token))[0] == 200
    assert (await send(client, "DELETE", f"/v1/outbox/{queued['mine']}", token))[0] == 200
    # The other account's message is still queued.
    await call(client, "GET", f"/v1/outbox/{queued['other']}")


async def test_bound_token_adds_only_its_own_account(
    make_client: MakeClient, quiet: Settings
) -> None:
    """POST /v1/account with a bound token (naming the account group) may not replace or add
    another account; the answer is the same for existing and unknown ids."""
    client = await make_client(quiet)
    for account in ("mine", "other"):
        await call(client, "POST", "/v1/account", imap_account(account))
    token = await mint(client, account="mine", permissions={"account": frozenset({"write"})})
    existing = await send(client, "POST", "/v1/account", token, imap_account("other"))
    new = await send(client, "POST", "/v1/account", token, imap_account("newcomer"))
    assert existing[0] == new[0] == 403
    assert existing[1]["message"] == new[1]["message"]
    status, body = await send(client, "POST", "/v1/account", token, imap_account("mine"))
    assert status == 200, body
    assert body["state"] == "existing"


async def test_metrics_need_the_metrics_scope(make_client: MakeClient, quiet: Settings) -> None:
    """/metrics answers a token with the metrics scope (the configured one has it), refuses
    one without it and a missing token, unless security.metrics_public."""
    client = await make_client(quiet)
    assert (await client.get("/metrics")).status == 200
    api_only = await mint(client, scopes=frozenset({"api"}))
    metrics_only = await mint(client, scopes=frozenset({"metrics"}))
    assert (await send(client, "GET", "/metrics", api_only))[0] == 403
    assert (await send(client, "GET", "/metrics", metrics_only))[0] == 200
    anon = await make_client(quiet, token=None)
    assert (await anon.get("/metrics")).status == 401
    public = dataclasses.replace(
        quiet, security=dataclasses.replace(quiet.security, metrics_public=True)
    )
    anon = await make_client(public, token=None)
    assert (await anon.get("/metrics")).status == 200


async def test_openapi_shows_permissions(client: TestClient) -> None:
    """Each guarded operation in /openapi.json carries its permission."""
    doc = await call(client, "GET", "/openapi.json")
    for ep in guarded():
        op = doc["paths"][ep.path][ep.method.lower()]
        assert op["x-permission"] == str(ep.permission)
        assert str(ep.permission) in op["description"]
        assert "403" in op["responses"]
    assert "x-permission" not in doc["paths"]["/health"]["get"]
