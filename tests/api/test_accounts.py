"""The accounts API: EmailEngine payloads, shared-mailbox delegation, secrets never returned."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import STORE
from relay.store.schema import accounts, events
from tests.api.helpers import add_app, add_main, call

SEED_SHARED = {
    "account": "shared",
    "name": "Shared Account",
    "email": "shared@example.com",
    "oauth2": {"auth": {"delegatedUser": "shared@example.com", "delegatedAccount": "my-account"}},
}

PASSWORD_ACCOUNT = {
    "account": "pw",
    "name": "Password user",
    "email": "pw@example.com",
    "imap": {
        "host": "127.0.0.1",
        "port": 1143,
        "secure": False,
        "auth": {"user": "pw@example.com", "pass": "hunter2-imap"},
    },
    "smtp": {
        "host": "127.0.0.1",
        "port": 1025,
        "auth": {"user": "pw@example.com", "pass": "hunter2-smtp"},
    },
}


async def _rows(client: TestClient, table: Any) -> list[Any]:
    store = client.app[STORE]
    async with store.read() as conn:
        # In key order: rows updated later (events get their stream position after commit)
        # come back in another order from PostgreSQL's heap.
        query = select(table).order_by(*table.primary_key.columns)
        return list((await conn.execute(query)).mappings().all())


async def test_seed_shared_payload_verbatim(client: TestClient) -> None:
    """The seed's shared payload works verbatim; provider and backend come from the main account."""
    app_id = await add_app(client)
    await add_main(client, app_id)
    created = await call(client, "POST", "/v1/account", SEED_SHARED)
    assert created == {"account": "shared", "state": "new"}
    view = await call(client, "GET", "/v1/account/shared")
    assert view["oauth2"]["auth"] == {
        "delegatedUser": "shared@example.com",
        "delegatedAccount": "my-account",
    }
    assert view["backend"] == "imap"
    assert view["state"] == "init"
    assert view["secrets"]["oauth2.refreshToken"] is False


async def test_graph_backend_from_api_scopes(client: TestClient) -> None:
    """An app with baseScopes api makes the account (and its shared accounts) graph-backed."""
    app_id = await add_app(client, baseScopes="api")
    await add_main(client, app_id)
    await call(client, "POST", "/v1/account", SEED_SHARED)
    assert (await call(client, "GET", "/v1/account/my-account"))["backend"] == "graph"
    assert (await call(client, "GET", "/v1/account/shared"))["backend"] == "graph"


async def test_secrets_never_returned_and_encrypted_at_rest(client: TestClient) -> None:
    """GET shows only whether secrets are set; the stored row holds them encrypted."""
    await call(client, "POST", "/v1/account", PASSWORD_ACCOUNT)
    view = await call(client, "GET", "/v1/account/pw")
    text = json.dumps(view)
    assert "hunter2" not in text
    assert view["secrets"]["imap.auth.pass"] is True
    assert view["secrets"]["smtp.auth.pass"] is True
    assert view["imap"]["auth"] == {"user": "pw@example.com"}
    listing = await call(client, "GET", "/v1/accounts")
    assert "hunter2" not in json.dumps(listing)
    (row,) = await _rows(client, accounts)
    assert b"hunter2" not in row["secrets"]
    assert "hunter2" not in json.dumps(row["config"])


async def test_post_existing_replaces(client: TestClient) -> None:
    """POSTing an existing account id updates it and says so (EmailEngine semantics)."""
    await call(client, "POST", "/v1/account", PASSWORD_ACCOUNT)
    again = await call(client, "POST", "/v1/account", {**PASSWORD_ACCOUNT, "name": "Renamed"})
    assert again == {"account": "pw", "state": "existing"}
    assert (await call(client, "GET", "/v1/account/pw"))["name"] == "Renamed"


async def test_account_added_and_deleted_events_recorded(client: TestClient) -> None:
    """accountAdded/accountDeleted are stored as events in the same transaction as the change."""
    await call(client, "POST", "/v1/account", PASSWORD_ACCOUNT)
    await call(client, "DELETE", "/v1/account/pw")
    rows = await _rows(client, events)
    assert [r["event"] for r in rows] == ["accountAdded", "accountDeleted"]
    added = json.loads(rows[0]["payload"])
    assert added["serviceUrl"] == "https://relay.example.com"
    assert added["account"] == "pw"
    assert added["data"]["email"] == "pw@example.com"
    assert added["date"].endswith("Z")


async def test_update_merges_and_keeps_secrets(client: TestClient) -> None:
    """PUT changes the given keys, keeps stored secrets, and removes keys set to null."""
    await call(client, "POST", "/v1/account", {**PASSWORD_ACCOUNT, "path": ["INBOX", "\\Sent"]})
    await call(
        client, "PUT", "/v1/account/pw", {"name": "New name", "imap": {"port": 1993}, "path": None}
    )
    view = await call(client, "GET", "/v1/account/pw")
    assert view["name"] == "New name"
    assert view["imap"]["port"] == 1993
    assert view["imap"]["host"] == "127.0.0.1"
    assert view["secrets"]["imap.auth.pass"] is True
    assert "path" not in view


async def test_list_paging_and_state_filter(client: TestClient) -> None:
    """GET /v1/accounts pages and filters by state."""
    for n in range(5):
        await call(client, "POST", "/v1/account", {**PASSWORD_ACCOUNT, "account": f"a{n}"})
    page = await call(client, "GET", "/v1/accounts?page=1&pageSize=2")
    assert page["total"] == 5
    assert page["pages"] == 3
    assert [a["account"] for a in page["accounts"]] == ["a2", "a3"]
    assert (await call(client, "GET", "/v1/accounts?state=init"))["total"] == 5
    assert (await call(client, "GET", "/v1/accounts?state=connected"))["total"] == 0
    await call(client, "GET", "/v1/accounts?state=bogus", status=400)


async def test_reconnect_and_sync_recorded(client: TestClient) -> None:
    """PUT reconnect/sync are accepted and recorded on the account."""
    await call(client, "POST", "/v1/account", PASSWORD_ACCOUNT)
    assert await call(client, "PUT", "/v1/account/pw/reconnect", {"reconnect": True}) == {
        "reconnect": True
    }
    assert await call(client, "PUT", "/v1/account/pw/sync", {"sync": True}) == {"sync": True}
    view = await call(client, "GET", "/v1/account/pw")
    assert view["reconnectRequested"].endswith("Z")
    assert view["syncRequested"].endswith("Z")
    await call(client, "PUT", "/v1/account/nope/reconnect", {"reconnect": True}, status=404)


async def test_delete_main_with_shared_refused(client: TestClient) -> None:
    """A main account that shared accounts delegate to cannot be deleted; after them it can."""
    app_id = await add_app(client)
    await add_main(client, app_id)
    await call(client, "POST", "/v1/account", SEED_SHARED)
    err = await call(client, "DELETE", "/v1/account/my-account", status=409)
    assert "shared" in err["message"]
    assert (await call(client, "GET", "/v1/account/my-account"))["account"] == "my-account"
    await call(client, "DELETE", "/v1/account/shared")
    assert (await call(client, "DELETE", "/v1/account/my-account"))["deleted"] is True


async def test_chain_of_delegation_resolves_to_root(client: TestClient) -> None:
    """A shared account may delegate to a shared account; the root's app decides the backend."""
    app_id = await add_app(client, baseScopes="api")
    await add_main(client, app_id)
    await call(client, "POST", "/v1/account", SEED_SHARED)
    second = {
        **SEED_SHARED,
        "account": "shared2",
        "oauth2": {"auth": {"delegatedUser": "s2@example.com", "delegatedAccount": "shared"}},
    }
    await call(client, "POST", "/v1/account", second)
    assert (await call(client, "GET", "/v1/account/shared2"))["backend"] == "graph"


async def test_delegation_loop_via_update_refused(client: TestClient) -> None:
    """Pointing a chain's root at its own dependent is a loop: 400 naming the field, no change."""
    app_id = await add_app(client)
    await add_main(client, app_id)
    await call(client, "POST", "/v1/account", SEED_SHARED)
    err = await call(
        client,
        "PUT",
        "/v1/account/my-account",
        {
            "oauth2": {
                "provider": None,
                "accessToken": None,
                "refreshToken": None,
                "auth": {"delegatedUser": "main@example.com", "delegatedAccount": "shared"},
            }
        },
        status=400,
    )
    assert err["field"] == "oauth2.auth.delegatedAccount"
    assert "loop" in err["message"]
    view = await call(client, "GET", "/v1/account/my-account")
    assert "delegatedAccount" not in view["oauth2"]["auth"]


async def test_delegation_chain_longer_than_20_refused(client: TestClient) -> None:
    """A 21st hop is refused."""
    app_id = await add_app(client)
    await add_main(client, app_id, account="s0")
    for n in range(1, 21):
        body = {
            **SEED_SHARED,
            "account": f"s{n}",
            "oauth2": {"auth": {"delegatedUser": "x@example.com", "delegatedAccount": f"s{n - 1}"}},
        }
        await call(client, "POST", "/v1/account", body)
    body = {
        **SEED_SHARED,
        "account": "s21",
        "oauth2": {"auth": {"delegatedUser": "x@example.com", "delegatedAccount": "s20"}},
    }
    err = await call(client, "POST", "/v1/account", body, status=400)
    assert "20 hops" in err["message"]
    await call(client, "GET", "/v1/account/s21", status=404)


BAD_INPUTS = [
    (
        {"oauth2": {"auth": {"delegatedUser": "shared@example.com", "delegatedAccount": "ghost"}}},
        "oauth2.auth.delegatedAccount",
    ),
    ({"oauth2": {"auth": {"delegatedAccount": "my-account"}}}, "oauth2.auth.delegatedUser"),
    (
        {"oauth2": {"auth": {"delegatedUser": "shared@example.com", "delegatedAccount": "shared"}}},
        "oauth2.auth.delegatedAccount",
    ),
    ({"oauth2": {"provider": "no-such-app", "accessToken": "x"}}, "oauth2.provider"),
    (
        {
            "oauth2": {
                "auth": {"delegatedUser": "shared@example.com", "delegatedAccount": "my-account"},
                "refreshToken": "r",
            }
        },
        "oauth2.refreshToken",
    ),
    (
        {"oauth2": {"auth": {"delegatedUser": "not-an-address", "delegatedAccount": "my-account"}}},
        "oauth2.auth.delegatedUser",
    ),
    ({"email": "nope"}, "email"),
    (
        {
            "imap": {"host": "127.0.0.1", "port": 70000, "auth": {"user": "u", "pass": "p"}},
            "oauth2": None,
        },
        "imap.port",
    ),
    ({"oauth2": None}, "imap"),
    ({"account": ""}, "account"),
    ({"account": "a/b"}, "account"),
    ({"surprise": 1}, "surprise"),
    ({"oauth2": {"auth": {"user": "x@example.com"}}}, "oauth2.provider"),
    ({"copy": "sometimes"}, "copy"),
    ({"logs": "verbose"}, "logs"),
    ({"syncFrom": "last tuesday"}, "syncFrom"),
    ({"proxy": "ftp://127.0.0.1:21"}, "proxy"),
    ({"proxy": "socks5://127.0.0.1"}, "proxy"),
    ({"proxy": "socks5://:1080"}, "proxy"),
]


@pytest.mark.parametrize(("patch", "field"), BAD_INPUTS)
async def test_bad_input_names_field_and_changes_nothing(
    client: TestClient, patch: dict[str, Any], field: str
) -> None:
    """Each malformed account payload gets a 400 naming the field and stores nothing."""
    app_id = await add_app(client)
    await add_main(client, app_id)
    body = {k: v for k, v in {**SEED_SHARED, **patch}.items() if v is not None}
    err = await call(client, "POST", "/v1/account", body, status=400)
    assert err["field"] == field, err
    assert err["code"] == "InputValidationError"
    assert err["statusCode"] == 400
    rows = await _rows(client, accounts)
    assert [r["id"] for r in rows] == ["my-account"]
    assert [r["event"] for r in await _rows(client, events)] == ["accountAdded"]


async def test_not_json_body(client: TestClient) -> None:
    """A body that is not JSON is a 400, not a 500."""
    resp = await client.post(
        "/v1/account", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    err = await resp.json()
    assert err["message"].startswith("Request body is not valid JSON: ")
    assert err["field"] == "body"


async def test_unknown_account_404(client: TestClient) -> None:
    """Reading, updating or deleting an unknown account is a 404 JSON error."""
    for method in ("GET", "PUT", "DELETE"):
        err = await call(
            client, method, "/v1/account/ghost", {} if method == "PUT" else None, status=404
        )
        assert err["code"] == "NotFound"


async def test_control_characters_in_provider_refused(client: TestClient) -> None:
    """A provider id with a NUL byte is a 400 naming the field, not a store error."""
    body = {**PASSWORD_ACCOUNT, "oauth2": {"provider": "ab\x00cd", "accessToken": "t"}}
    err = await call(client, "POST", "/v1/account", body, status=400)
    assert err["field"] == "oauth2.provider"


async def test_emailengine_copy_logs_proxy_and_sync_from_are_kept_and_shown(
    client: TestClient,
) -> None:
    """copy, logs, proxy and syncFrom are stored and shown (the proxy without its password,
    which is kept encrypted); PUT changes them and null removes them."""
    body = {
        **PASSWORD_ACCOUNT,
        "copy": False,
        "logs": True,
        "proxy": "socks5://relay:proxy-secret@127.0.0.1:1080",
        "syncFrom": "2024-05-01T00:00:00.000Z",
    }
    await call(client, "POST", "/v1/account", body)
    view = await call(client, "GET", "/v1/account/pw")
    assert view["copy"] is False
    assert view["logs"] is True
    assert view["proxy"] == "socks5://relay:***@127.0.0.1:1080"
    assert view["secrets"]["proxy"] is True
    assert view["syncFrom"].startswith("2024-05-01T00:00:00")
    (row,) = await _rows(client, accounts)
    assert "proxy-secret" not in json.dumps(row["config"])
    assert "proxy-secret" not in json.dumps(view)
    change = {"copy": True, "logs": False, "proxy": None, "syncFrom": None}
    await call(client, "PUT", "/v1/account/pw", change)
    view = await call(client, "GET", "/v1/account/pw")
    assert (view["copy"], view["logs"]) == (True, False)
    assert "proxy" not in view
    assert "syncFrom" not in view
    assert view["secrets"]["proxy"] is False
    assert view["secrets"]["imap.auth.pass"] is True


async def test_proxy_refused_for_graph_accounts(client: TestClient) -> None:
    """Graph accounts (and shared accounts of one) refuse proxy with a 400 naming it."""
    app_id = await add_app(client, baseScopes="api")
    await add_main(client, app_id)
    for account, body in (
        ("my-account", {"proxy": "socks5://127.0.0.1:1080"}),
        ("shared", {**SEED_SHARED, "proxy": "http://127.0.0.1:3128"}),
    ):
        if account == "my-account":
            err = await call(client, "PUT", f"/v1/account/{account}", body, status=400)
        else:
            err = await call(client, "POST", "/v1/account", body, status=400)
        assert err["field"] == "proxy", err
    assert "proxy" not in await call(client, "GET", "/v1/account/my-account")
