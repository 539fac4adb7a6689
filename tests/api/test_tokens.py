"""The token API: EmailEngine's paths and payloads, minting within limits, revocation."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import STORE
from relay.auth.api_tokens import hash_token
from relay.config import Settings
from relay.store import token_log as token_log_store
from relay.store import tokens as tokens_store
from relay.store.schema import api_tokens
from tests.api.helpers import call
from tests.conftest import MakeClient


def _account(name: str) -> dict[str, Any]:
    return {
        "account": name,
        "name": name.title(),
        "email": f"{name}@example.com",
        "imap": {"host": "127.0.0.1", "port": 1143, "auth": {"user": name, "pass": "p"}},
    }


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def _status(client: TestClient, token: str, path: str = "/v1/accounts") -> int:
    resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    await resp.read()
    return resp.status


async def _as(client: TestClient, token: str, method: str, path: str, body: Any = None) -> Any:
    resp = await client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, await resp.json()


async def test_create_list_get_delete_round_trip(client: TestClient) -> None:
    """The token is shown once; reads show the grant but never the token or its hash; a
    deleted token is gone."""
    await call(client, "POST", "/v1/account", _account("acme"))
    body = {
        "description": "helpdesk bot",
        "account": "acme",
        "scopes": ["api"],
        "permissions": {"message": ["read"], "submit": ["send"]},
        "restrictions": {
            "addresses": ["127.0.0.1", "10.1.0.0/16"],
            "referrers": ["https://app.example.com/"],
            "rateLimit": {"maxRequests": 10, "timeWindow": 60},
        },
        "expires": "2099-01-01T00:00:00Z",
        "metadata": {"owner": "helpdesk", "ticket": 42},
    }
    created = await call(client, "POST", "/v1/tokens", body)
    token, token_id = created["token"], created["id"]
    assert len(token) == 64
    assert set(created) == {"token", "id"}
    expected = {
        "id": token_id,
        "account": "acme",
        "shared": False,
        "description": "helpdesk bot",
        "scopes": ["api"],
        "permissions": {"message": ["read"], "submit": ["send"]},
        "restrictions": {
            "addresses": ["127.0.0.1/32", "10.1.0.0/16"],
            "referrers": ["https://app.example.com/"],
            "rateLimit": {"maxRequests": 10, "timeWindow": 60},
        },
        "expires": "2099-01-01T00:00:00.000Z",
        "metadata": {"owner": "helpdesk", "ticket": 42},
        "source": "api",
    }
    one = await call(client, "GET", f"/v1/tokens/{token_id}")
    assert {k: v for k, v in one.items() if k != "created"} == expected
    listing = await call(client, "GET", "/v1/tokens")
    # The configured token and the new one.
    assert listing["total"] == 2
    assert listing["pages"] == 1
    assert [t for t in listing["tokens"] if t["id"] == token_id] == [one]
    for text in (json.dumps(one), json.dumps(listing)):
        assert token not in text
        assert hash_token(token) not in text
    async with client.app[STORE].read() as conn:
        row = (
            (await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)))
            .mappings()
            .one()
        )
    assert row["token_hash"] == hash_token(token)
    assert row["parent_id"] is not None

    assert await call(client, "DELETE", f"/v1/tokens/{token_id}") == {"deleted": True}
    missing = await call(client, "GET", f"/v1/tokens/{token_id}", status=404)
    assert missing["code"] == "TokenNotFound"
    await call(client, "DELETE", f"/v1/tokens/{token_id}", status=404)
    assert (await call(client, "GET", "/v1/tokens"))["total"] == 1


async def test_defaults_and_paging(client: TestClient) -> None:
    """Only a description is needed (scopes default to api); pages and the account filter
    work."""
    await call(client, "POST", "/v1/account", _account("acme"))
    for i in range(3):
        await call(client, "POST", "/v1/tokens", {"description": f"t{i}"})
    bound = await call(client, "POST", "/v1/tokens", {"description": "b", "account": "acme"})
    first = await call(client, "GET", "/v1/tokens?pageSize=2")
    assert (first["total"], first["pages"], len(first["tokens"])) == (5, 3, 2)
    last = await call(client, "GET", "/v1/tokens?pageSize=2&page=2")
    assert [t["id"] for t in last["tokens"]] == [bound["id"]]
    plain = next(t for t in first["tokens"] if t["description"] == "t0")
    assert plain["scopes"] == ["api"]
    assert "permissions" not in plain
    assert "account" not in plain
    only = await call(client, "GET", "/v1/tokens?account=acme")
    assert [t["id"] for t in only["tokens"]] == [bound["id"]]
    await call(client, "GET", "/v1/tokens?pageSize=1001", status=400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "description"),
        ({"description": ""}, "description"),
        ({"description": "x", "scopes": ["imap"]}, "scopes.0"),
        ({"description": "x", "scopes": []}, "scopes"),
        ({"description": "x", "permissions": {"foo": ["read"]}}, "permissions.foo"),
        ({"description": "x", "permissions": {"message": ["fly"]}}, "permissions.message.0"),
        (
            {"description": "x", "restrictions": {"addresses": ["10.0.0.300/8"]}},
            "restrictions.addresses.0",
        ),
        (
            {"description": "x", "restrictions": {"addresses": ["10.0.0.0/8", "nope"]}},
            "restrictions.addresses.1",
        ),
        (
            {"description": "x", "restrictions": {"rateLimit": {"maxRequests": 0}}},
            "restrictions.rateLimit.maxRequests",
        ),
        (
            {
                "description": "x",
                "restrictions": {"rateLimit": {"maxRequests": 5, "timeWindow": 0}},
            },
            "restrictions.rateLimit.timeWindow",
        ),
        ({"description": "x", "restrictions": {"color": 1}}, "restrictions.color"),
        ({"description": "x", "expires": "2001-01-01T00:00:00Z"}, "expires"),
        ({"description": "x", "expires": "soon"}, "expires"),
        ({"description": "x", "shared": True}, "shared"),
        ({"description": "x", "metadata": "[1, 2]"}, "metadata"),
        ({"description": "x", "color": "red"}, "color"),
    ],
)
async def test_validation_names_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    """A malformed body is a 400 naming the offending field."""
    error = await call(client, "POST", "/v1/tokens", body, status=400)
    assert error["field"] == field
    assert (await call(client, "GET", "/v1/tokens"))["total"] == 1


async def test_metadata_as_json_string(client: TestClient) -> None:
    """EmailEngine's metadata (a JSON string) is kept as the object it encodes."""
    created = await call(client, "POST", "/v1/token", {"description": "x", "metadata": '{"a": 1}'})
    assert (await call(client, "GET", f"/v1/tokens/{created['id']}"))["metadata"] == {"a": 1}


async def test_account_must_exist(client: TestClient) -> None:
    """Binding a token to an unknown account is a 404 naming account; nothing is stored."""
    error = await call(
        client, "POST", "/v1/tokens", {"description": "x", "account": "ghost"}, status=404
    )
    assert error["field"] == "account"
    assert (await call(client, "GET", "/v1/tokens"))["total"] == 1


RESTRICTED = {
    "description": "restricted",
    "account": "acme",
    "scopes": ["api"],
    "permissions": {"token": ["read", "write"], "account": ["read"]},
    "restrictions": {
        "addresses": ["127.0.0.0/8"],
        "rateLimit": {"maxRequests": 100, "timeWindow": 60},
    },
}
WITHIN: dict[str, Any] = {
    "description": "narrower",
    "account": "acme",
    "permissions": {"account": ["read"]},
    "restrictions": {
        "addresses": ["127.0.0.1/32"],
        "rateLimit": {"maxRequests": 10, "timeWindow": 60},
    },
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"account": "other"}, "account"),
        ({"account": None}, "account"),
        ({"shared": True}, "account"),
        ({"scopes": ["api", "smtp"]}, "scopes"),
        ({"permissions": {"account": ["read", "write"]}}, "permissions"),
        ({"permissions": {"token": ["destructive"]}}, "permissions"),
        ({"permissions": None}, "permissions"),
        ({"expires": None}, "expires"),
        ({"expires": _in(7200)}, "expires"),
        ({"restrictions": {"addresses": ["0.0.0.0/0"]}}, "restrictions.addresses"),
        ({"restrictions": None}, "restrictions.addresses"),
        (
            {
                "restrictions": {
                    "addresses": ["127.0.0.1"],
                    "rateLimit": {"maxRequests": 1000, "timeWindow": 60},
                }
            },
            "restrictions.rateLimit",
        ),
        (
            {
                "restrictions": {
                    "addresses": ["127.0.0.1"],
                    "rateLimit": {"maxRequests": 100, "timeWindow": 30},
                }
            },
            "restrictions.rateLimit",
        ),
    ],
)
async def test_minting_wider_than_yourself_is_forbidden(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    """A restricted token can mint only within its own grant: anything wider is a 403 naming
    what would widen, and nothing is stored."""
    await call(client, "POST", "/v1/account", _account("acme"))
    await call(client, "POST", "/v1/account", _account("other"))
    parent = await call(client, "POST", "/v1/tokens", {**RESTRICTED, "expires": _in(3600)})
    within = {**WITHIN, "expires": _in(1800)}
    status, ok = await _as(client, parent["token"], "POST", "/v1/tokens", within)
    assert status == 200, ok
    status, error = await _as(client, parent["token"], "POST", "/v1/tokens", {**within, **change})
    assert status == 403, error
    assert error["code"] == "Forbidden"
    assert error["field"] == field
    assert field in error["message"]
    # The configured token, the parent and the one within its limits.
    assert (await call(client, "GET", "/v1/tokens"))["total"] == 3
    child = await call(client, "GET", f"/v1/tokens/{ok['id']}")
    assert child["account"] == "acme"
    async with client.app[STORE].read() as conn:
        parent_id = await conn.scalar(
            select(api_tokens.c.parent_id).where(api_tokens.c.id == ok["id"])
        )
    assert parent_id == parent["id"]


async def test_bound_token_sees_only_its_account(client: TestClient) -> None:
    """An account-bound token lists, reads and deletes only its own account's tokens."""
    await call(client, "POST", "/v1/account", _account("acme"))
    await call(client, "POST", "/v1/account", _account("other"))
    mine = await call(client, "POST", "/v1/tokens", {"description": "a", "account": "acme"})
    theirs = await call(client, "POST", "/v1/tokens", {"description": "b", "account": "other"})
    full = await call(client, "POST", "/v1/tokens", {"description": "full"})
    bound = await call(
        client,
        "POST",
        "/v1/tokens",
        {
            "description": "bound",
            "account": "acme",
            "permissions": {"token": ["read", "destructive"]},
        },
    )
    token = bound["token"]
    status, listing = await _as(client, token, "GET", "/v1/tokens")
    assert status == 200
    assert sorted(t["id"] for t in listing["tokens"]) == sorted([mine["id"], bound["id"]])
    status, listing = await _as(client, token, "GET", "/v1/tokens?account=other")
    assert (status, listing["total"]) == (200, 0)
    for other in (theirs["id"], full["id"]):
        assert (await _as(client, token, "GET", f"/v1/tokens/{other}"))[0] == 404
        assert (await _as(client, token, "GET", f"/v1/tokens/{other}/log"))[0] == 404
        assert (await _as(client, token, "DELETE", f"/v1/tokens/{other}"))[0] == 404
    assert (await _as(client, token, "DELETE", f"/v1/token/{theirs['token']}"))[0] == 404
    assert (await _as(client, token, "GET", "/v1/tokens/account/other"))[0] == 404
    status, own = await _as(client, token, "GET", "/v1/tokens/account/acme")
    assert status == 200
    assert sorted(t["id"] for t in own["tokens"]) == sorted([mine["id"], bound["id"]])
    # Nothing of the other account's was deleted.
    assert (await call(client, "GET", f"/v1/tokens/{theirs['id']}"))["account"] == "other"


async def test_revocation_takes_effect_on_the_next_request(client: TestClient) -> None:
    """A deleted token, already accepted (and cached), is refused on its very next request;
    a token may delete itself."""
    first = await call(client, "POST", "/v1/tokens", {"description": "one"})
    assert await _status(client, first["token"]) == 200
    await call(client, "DELETE", f"/v1/tokens/{first['id']}")
    assert await _status(client, first["token"]) == 401

    second = await call(
        client,
        "POST",
        "/v1/tokens",
        {"description": "two", "permissions": {"token": ["destructive"], "account": ["read"]}},
    )
    assert await _status(client, second["token"]) == 200
    status, body = await _as(client, second["token"], "DELETE", f"/v1/tokens/{second['id']}")
    assert (status, body) == (200, {"deleted": True})
    assert await _status(client, second["token"]) == 401


async def test_revocation_from_outside_takes_effect_within_a_second(
    client: TestClient,
) -> None:
    """A token deleted in the store by someone else (``relay token revoke``, another node)
    is refused once its cached grant is a second old, without a restart."""
    created = await call(client, "POST", "/v1/tokens", {"description": "outside"})
    assert await _status(client, created["token"]) == 200
    store = client.app[STORE]
    async with store.write() as conn:
        assert await tokens_store.delete(conn, created["id"])
    await asyncio.sleep(1.1)
    assert await _status(client, created["token"]) == 401


async def test_expired_token_is_refused(client: TestClient) -> None:
    """A token whose expiry has passed gets 401."""
    created = await call(client, "POST", "/v1/tokens", {"description": "x", "expires": _in(1.5)})
    assert await _status(client, created["token"]) == 200
    await asyncio.sleep(2)
    assert await _status(client, created["token"]) == 401


async def test_emailengine_aliases(client: TestClient) -> None:
    """POST /v1/token creates; DELETE /v1/token/{token} deletes by the token itself;
    GET /v1/tokens/account/{account} lists an account's tokens."""
    await call(client, "POST", "/v1/account", _account("acme"))
    created = await call(client, "POST", "/v1/token", {"description": "old", "account": "acme"})
    other = await call(client, "POST", "/v1/token", {"description": "unbound"})
    listed = await call(client, "GET", "/v1/tokens/account/acme")
    assert [t["id"] for t in listed["tokens"]] == [created["id"]]
    await call(client, "GET", "/v1/tokens/account/ghost", status=404)
    assert await _status(client, created["token"], "/v1/account/acme") == 200
    deleted = await call(client, "DELETE", f"/v1/token/{created['token']}")
    assert deleted == {"deleted": True}
    assert await _status(client, created["token"], "/v1/account/acme") == 401
    missing = await call(client, "DELETE", f"/v1/token/{created['token']}", status=404)
    assert created["token"] not in json.dumps(missing)
    assert await _status(client, other["token"]) == 200
    assert (await call(client, "GET", "/v1/tokens/account/acme"))["tokens"] == []


async def test_configured_token_cannot_be_deleted(client: TestClient) -> None:
    """The token from security.api_token comes back at each start: deleting it is a 409."""
    listing = await call(client, "GET", "/v1/tokens")
    (configured,) = listing["tokens"]
    assert configured["source"] == "config"
    assert configured["scopes"] == ["api", "metrics", "smtp"]
    await call(client, "DELETE", f"/v1/tokens/{configured['id']}", status=409)


async def test_deleting_an_account_deletes_its_tokens(client: TestClient) -> None:
    """An account's tokens go with it and are refused at once."""
    await call(client, "POST", "/v1/account", _account("acme"))
    bound = await call(
        client,
        "POST",
        "/v1/tokens",
        {"description": "x", "account": "acme", "permissions": {"account": ["read"]}},
    )
    assert await _status(client, bound["token"], "/v1/account/acme") == 200
    await call(client, "DELETE", "/v1/account/acme")
    assert await _status(client, bound["token"], "/v1/account/acme") == 401
    await call(client, "GET", f"/v1/tokens/{bound['id']}", status=404)
    assert (await call(client, "GET", "/v1/tokens"))["total"] == 1


async def test_log_pages_newest_first(client: TestClient) -> None:
    """GET /v1/tokens/{id}/log pages the token's audit entries, newest first."""
    created = await call(client, "POST", "/v1/tokens", {"description": "x"})
    other = await call(client, "POST", "/v1/tokens", {"description": "y"})
    async with client.app[STORE].write() as conn:
        await token_log_store.append(
            conn,
            [
                token_log_store.Entry(
                    token_id=token_id,
                    created_ms=1_700_000_000_000 + i * 1000,
                    method="DELETE",
                    route=f"/v1/webhooks/{{route}}#{i}",
                    account=None if i else "acme",
                    status=200,
                    address="127.0.0.1",
                )
                for i, token_id in enumerate([created["id"]] * 3 + [other["id"]])
            ],
        )
    page = await call(client, "GET", f"/v1/tokens/{created['id']}/log?pageSize=2")
    assert (page["total"], page["page"], page["pages"]) == (3, 0, 2)
    assert [e["route"] for e in page["entries"]] == [
        "/v1/webhooks/{route}#2",
        "/v1/webhooks/{route}#1",
    ]
    assert page["entries"][0] == {
        "time": "2023-11-14T22:13:22.000Z",
        "method": "DELETE",
        "route": "/v1/webhooks/{route}#2",
        "status": 200,
        "address": "127.0.0.1",
    }
    rest = await call(client, "GET", f"/v1/tokens/{created['id']}/log?pageSize=2&page=1")
    assert [e["account"] for e in rest["entries"]] == ["acme"]
    missing = await call(client, "GET", "/v1/tokens/ffffffffffffffff/log", status=404)
    assert missing["code"] == "TokenNotFound"


async def test_minted_token_works_with_its_grant(
    make_client: MakeClient, settings: Settings
) -> None:
    """A token minted through the API authenticates in a relay restarted on the same store."""
    client = await make_client(settings)
    created = await call(client, "POST", "/v1/tokens", {"description": "x"})
    await client.close()
    again = await make_client(settings, token=created["token"])
    assert (await call(again, "GET", "/v1/accounts"))["total"] == 0
