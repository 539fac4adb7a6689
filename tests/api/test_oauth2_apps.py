"""The OAuth2 applications API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import STORE
from relay.store.schema import oauth2_apps
from tests.api.helpers import add_app, add_main, call


async def test_create_read_list_update_delete(client: TestClient) -> None:
    """The full lifecycle of an app; the client secret is never returned."""
    app_id = await add_app(client)
    app = await call(client, "GET", f"/v1/oauth2/{app_id}")
    assert app["provider"] == "outlook"
    assert app["hasClientSecret"] is True
    assert app["extraScopes"] == ["User.ReadBasic.All", "Mail.ReadWrite.Shared", "Mail.Send.Shared"]
    assert "app-secret-value" not in json.dumps(app)
    listing = await call(client, "GET", "/v1/oauth2")
    assert listing["total"] == 1
    assert "app-secret-value" not in json.dumps(listing)
    await call(
        client, "PUT", f"/v1/oauth2/{app_id}", {"name": "Renamed", "skipScopes": ["SMTP.Send"]}
    )
    app = await call(client, "GET", f"/v1/oauth2/{app_id}")
    assert (app["name"], app["skipScopes"], app["hasClientSecret"]) == (
        "Renamed",
        ["SMTP.Send"],
        True,
    )
    await call(client, "PUT", f"/v1/oauth2/{app_id}", {"clientSecret": None})
    assert (await call(client, "GET", f"/v1/oauth2/{app_id}"))["hasClientSecret"] is False
    assert (await call(client, "DELETE", f"/v1/oauth2/{app_id}"))["deleted"] is True
    await call(client, "GET", f"/v1/oauth2/{app_id}", status=404)


async def test_secret_encrypted_at_rest(client: TestClient) -> None:
    """The stored client secret is ciphertext."""
    await add_app(client)
    async with client.app[STORE].read() as conn:
        (row,) = (await conn.execute(select(oauth2_apps))).mappings().all()
    assert row["client_secret"] is not None
    assert b"app-secret-value" not in row["client_secret"]


async def test_app_in_use_cannot_be_deleted(client: TestClient) -> None:
    """Deleting an app that accounts use is refused with 409 naming them."""
    app_id = await add_app(client)
    await add_main(client, app_id)
    err = await call(client, "DELETE", f"/v1/oauth2/{app_id}", status=409)
    assert "my-account" in err["message"]


async def test_app_only_rules_on_update(client: TestClient) -> None:
    """An app-only app cannot be switched to a tenant alias or lose its secret."""
    app_id = await add_app(
        client, provider="outlookService", authority="contoso.onmicrosoft.com", baseScopes="api"
    )
    err = await call(client, "PUT", f"/v1/oauth2/{app_id}", {"authority": "common"}, status=400)
    assert err["field"] == "authority"
    err = await call(client, "PUT", f"/v1/oauth2/{app_id}", {"clientSecret": None}, status=400)
    assert err["field"] == "clientSecret"
    assert (await call(client, "GET", f"/v1/oauth2/{app_id}"))[
        "authority"
    ] == "contoso.onmicrosoft.com"


BAD = [
    ({"provider": "gmail"}, "provider"),
    ({"provider": "outlookService", "authority": "common"}, "authority"),
    ({"provider": "outlookService", "authority": "tenant-1", "clientSecret": None}, "clientSecret"),
    ({"clientId": ""}, "clientId"),
    ({"baseScopes": "pubsub"}, "baseScopes"),
    ({"extraScopes": ["two words"]}, "extraScopes.0"),
    ({"redirectUrl": "not a url"}, "redirectUrl"),
    ({"authority": "bad/tenant"}, "authority"),
    ({"name": None}, "name"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize(("patch", "field"), BAD)
async def test_bad_app_input(client: TestClient, patch: dict[str, Any], field: str) -> None:
    """Malformed app payloads are 400s naming the field; nothing is stored."""
    body = {
        "name": "Contoso",
        "provider": "outlook",
        "clientId": "cid",
        "clientSecret": "s3cret",
        "redirectUrl": "https://relay.example.com/oauth",
        **patch,
    }
    body = {k: v for k, v in body.items() if v is not None}
    err = await call(client, "POST", "/v1/oauth2", body, status=400)
    assert err["field"] == field, err
    assert (await call(client, "GET", "/v1/oauth2"))["total"] == 0


async def test_null_for_required_field_on_update(client: TestClient) -> None:
    """Setting a required field to null is refused."""
    app_id = await add_app(client)
    err = await call(client, "PUT", f"/v1/oauth2/{app_id}", {"clientId": None}, status=400)
    assert err["field"] == "clientId"
