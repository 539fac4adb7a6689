"""Small request helpers for API tests."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


async def call(
    client: TestClient, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    """Send a JSON request, assert the status, return the decoded JSON body."""
    resp = await client.request(method, path, json=body)
    payload = await resp.json()
    assert resp.status == status, payload
    return payload


async def add_app(client: TestClient, **overrides: Any) -> str:
    body = {
        "name": "Contoso",
        "provider": "outlook",
        "clientId": "11111111-2222-3333-4444-555555555555",
        "clientSecret": "app-secret-value",
        "authority": "common",
        "redirectUrl": "https://relay.example.com/oauth",
        "baseScopes": "imap",
        "extraScopes": ["User.ReadBasic.All", "Mail.ReadWrite.Shared", "Mail.Send.Shared"],
        **overrides,
    }
    return str((await call(client, "POST", "/v1/oauth2", body))["id"])


async def add_main(client: TestClient, app_id: str, account: str = "my-account") -> None:
    await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": account,
            "name": "Main",
            "email": "main@example.com",
            "oauth2": {
                "provider": app_id,
                "auth": {"user": "main@example.com"},
                "accessToken": "main-access-token",
                "refreshToken": "main-refresh-token",
            },
        },
    )
