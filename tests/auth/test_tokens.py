"""The token manager against the sandbox: caching, refresh, delegation, revocation, app-only."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import CIPHER, STORE
from relay.auth.identity import ResourceConsentMissing
from relay.auth.scopes import EXCHANGE, GRAPH
from relay.auth.tokens import secrets_context
from relay.config import Settings
from relay.errors import AuthError, ConsentRequired, NotFound, TokenRefreshFailed
from relay.sandbox.server import RunningSandbox
from relay.store.schema import accounts, events, oauth2_tokens
from tests.api.helpers import add_app, call
from tests.conftest import MakeClient

from .conftest import (
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    add_sandbox_app,
    consent,
    consented_main,
    form_link,
    introspect,
    open_link,
    sandbox_admin,
    sign_in_at,
    tokens_of,
    with_microsoft,
)

LONG_AGO = "2020-01-01T00:00:00+00:00"


async def _secrets(client: TestClient, account: str) -> dict[str, str]:
    async with client.app[STORE].read() as conn:
        blob = await conn.scalar(select(accounts.c.secrets).where(accounts.c.id == account))
    if blob is None:
        return {}
    return dict(client.app[CIPHER].decrypt_json(blob, context=secrets_context(account)))


async def _stale(client: TestClient, account: str = "my-account") -> None:
    """Mark the access token from the consent as expired, so the next request refreshes."""
    await call(client, "PUT", f"/v1/account/{account}", {"oauth2": {"expires": LONG_AGO}})


async def _events(client: TestClient, account: str, kind: str) -> list[dict[str, Any]]:
    async with client.app[STORE].read() as conn:
        rows = await conn.execute(
            select(events.c.payload)
            .where(events.c.account == account, events.c.event == kind)
            .order_by(events.c.seq)
        )
        return [json.loads(r) for r in rows.scalars()]


async def _state(client: TestClient, account: str) -> str:
    return str((await call(client, "GET", f"/v1/account/{account}"))["state"])


def _issued(sandbox: RunningSandbox) -> int:
    """How many refresh tokens the sandbox has issued (one per successful token request)."""
    return len(sandbox.state.refresh_tokens)


async def test_consent_token_is_used_until_close_to_expiry(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The token from the consent serves requests while it is fresh: no token request."""
    await consented_main(relay, http, sandbox)
    issued = _issued(sandbox)

    first = await tokens_of(relay).access_token("my-account")
    second = await tokens_of(relay).access_token("my-account", EXCHANGE)

    assert first == second
    assert first == (MAIN, (await _secrets(relay, "my-account"))["oauth2.accessToken"])
    assert _issued(sandbox) == issued


async def test_refresh_rotates_and_stores_tokens(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """An expired token is refreshed once; the rotated refresh token and the new access token
    are stored encrypted, and the new token is then reused."""
    await consented_main(relay, http, sandbox)
    before = await _secrets(relay, "my-account")
    await _stale(relay)

    user, token = await tokens_of(relay).access_token("my-account")
    again = await tokens_of(relay).access_token("my-account")

    assert user == MAIN
    assert token != before["oauth2.accessToken"]
    assert again == (user, token)
    granted = await introspect(http, sandbox, token)
    assert granted["active"] is True
    assert granted["resource"] == EXCHANGE
    after = await _secrets(relay, "my-account")
    assert after["oauth2.refreshToken"] != before["oauth2.refreshToken"]
    assert after["oauth2.refreshToken"] in sandbox.state.refresh_tokens
    async with relay.app[STORE].read() as conn:
        row = (await conn.execute(select(oauth2_tokens))).mappings().one()
    assert row["account"] == "my-account"
    assert row["resource"] == EXCHANGE
    assert token.encode() not in row["access_token"]


async def test_refresh_ahead_of_expiry(
    make_client: MakeClient,
    settings: Settings,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """A token closer to expiry than token_refresh_margin is replaced before it runs out."""
    client = await make_client(with_microsoft(settings, sandbox, token_refresh_margin=3600))
    await consented_main(client, http, sandbox)
    given = (await _secrets(client, "my-account"))["oauth2.accessToken"]

    _, token = await tokens_of(client).access_token("my-account")

    assert token != given
    assert (await introspect(http, sandbox, token))["active"] is True


async def test_one_refresh_at_a_time_per_account(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Concurrent requests for an account and its shared mailbox make one token request."""
    await consented_main(relay, http, sandbox)
    await call(relay, "POST", "/v1/account", SHARED_PAYLOAD)
    await _stale(relay)
    issued = _issued(sandbox)
    manager = tokens_of(relay)

    results = await asyncio.gather(*(manager.access_token(a) for a in ["my-account", "shared"] * 5))

    assert _issued(sandbox) == issued + 1
    assert {token for _, token in results} == {results[0][1]}


async def test_shared_account_uses_the_main_token_with_its_own_address(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The seed shared payload resolves to the main user's token, user= the shared address,
    through any length of delegation chain."""
    await consented_main(relay, http, sandbox)
    await call(relay, "POST", "/v1/account", SHARED_PAYLOAD)
    await call(
        relay,
        "POST",
        "/v1/account",
        {
            "account": "second",
            "name": "Second",
            "email": "second@example.com",
            "oauth2": {
                "auth": {"delegatedUser": "second@example.com", "delegatedAccount": "shared"}
            },
        },
    )
    manager = tokens_of(relay)

    main_user, main_token = await manager.access_token("my-account")
    shared_user, shared_token = await manager.access_token("shared")
    second_user, second_token = await manager.access_token("second")

    assert (main_user, shared_user, second_user) == (MAIN, SHARED, "second@example.com")
    assert main_token == shared_token == second_token
    granted = await introspect(http, sandbox, shared_token)
    assert granted["user"] == MAIN
    assert SHARED in granted["mailboxes"]


async def test_revoked_grant_puts_main_and_shared_in_authentication_error(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """invalid_grant (revoked): state and event authenticationError for the main account and
    every shared one, once; later requests fail at once without asking Microsoft."""
    await consented_main(relay, http, sandbox)
    await call(relay, "POST", "/v1/account", SHARED_PAYLOAD)
    await _stale(relay)
    await sandbox_admin(http, sandbox, f"users/{MAIN}/revoke")
    manager = tokens_of(relay)

    with pytest.raises(ConsentRequired, match="AADSTS50173") as caught:
        await manager.access_token("shared")

    assert caught.value.recorded is True
    for account in ("my-account", "shared"):
        view = await call(relay, "GET", f"/v1/account/{account}")
        assert view["state"] == "authenticationError"
        assert view["lastError"]["serverResponseCode"] == "OauthRenewError"
        (event,) = await _events(relay, account, "authenticationError")
        assert "AADSTS50173" in event["data"]["response"]
        assert event["data"]["tokenRequest"]["grant"] == "refresh_token"
    secrets = await _secrets(relay, "my-account")
    assert "oauth2.refreshToken" not in secrets

    # With the sandbox gone, only an answer that needs no request can still come.
    await sandbox.close()
    with pytest.raises(ConsentRequired) as again:
        await manager.access_token("my-account")
    assert again.value.recorded is True
    assert len(await _events(relay, "shared", "authenticationError")) == 1
    assert len(await _events(relay, "my-account", "authenticationError")) == 1


async def test_new_consent_renews_the_grant_in_place(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """After a revocation, a new link for the account (with a new scope) renews its tokens;
    the shared account works again, also after a reconnect, and Graph tokens come too."""
    app_id = await consented_main(relay, http, sandbox)
    await call(relay, "POST", "/v1/account", SHARED_PAYLOAD)
    await _stale(relay)
    await sandbox_admin(http, sandbox, f"users/{MAIN}/revoke")
    manager = tokens_of(relay)
    with pytest.raises(ConsentRequired):
        await manager.access_token("shared")
    await call(relay, "PUT", f"/v1/oauth2/{app_id}", {"extraScopes": ["Mail.Read"]})

    resp = await consent(relay, http, await form_link(relay, app_id))

    assert resp.status == 302
    assert resp.headers["Location"].endswith("account=my-account&state=existing")
    assert await _state(relay, "my-account") == "init"
    assert await _state(relay, "shared") == "init"
    user, token = await manager.access_token("shared")
    assert user == SHARED
    assert (await introspect(http, sandbox, token))["active"] is True
    _, graph = await manager.access_token("my-account", GRAPH)
    granted = await introspect(http, sandbox, graph)
    assert granted["resource"] == GRAPH
    assert "Mail.Read" in granted["scopes"]
    await call(relay, "PUT", "/v1/account/shared/reconnect", {"reconnect": True})
    assert (await manager.access_token("shared"))[0] == SHARED
    assert len(await _events(relay, "my-account", "accountAdded")) == 1


async def test_scope_never_consented_keeps_the_grant(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A Graph token the user never consented to fails (65001) without touching the grant."""
    app_id = await consented_main(relay, http, sandbox)
    await call(relay, "PUT", f"/v1/oauth2/{app_id}", {"extraScopes": ["Mail.Read"]})
    manager = tokens_of(relay)

    with pytest.raises(ResourceConsentMissing, match="AADSTS65001") as caught:
        await manager.access_token("my-account", GRAPH)

    assert caught.value.recorded is False
    assert await _state(relay, "my-account") == "init"
    assert "oauth2.refreshToken" in await _secrets(relay, "my-account")
    assert await _events(relay, "my-account", "authenticationError") == []
    assert (await manager.access_token("my-account"))[0] == MAIN


async def test_resource_the_application_does_not_ask_for(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A Graph token for an application without Graph scopes is refused before any request."""
    await consented_main(relay, http, sandbox)
    await _stale(relay)

    with pytest.raises(AuthError, match="asks for no permission of https://graph"):
        await tokens_of(relay).access_token("my-account", GRAPH)


async def test_unreachable_identity_platform_is_transient(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A token endpoint that cannot be reached raises TokenRefreshFailed; the grant stays."""
    await consented_main(relay, http, sandbox)
    await _stale(relay)
    await sandbox.close()
    manager = tokens_of(relay)

    with pytest.raises(TokenRefreshFailed):
        await manager.access_token("my-account")
    with pytest.raises(TokenRefreshFailed):
        await manager.access_token("my-account")

    assert await _state(relay, "my-account") == "init"
    assert "oauth2.refreshToken" in await _secrets(relay, "my-account")
    assert await _events(relay, "my-account", "authenticationError") == []


async def test_static_access_token_without_refresh_token(relay: TestClient) -> None:
    """A token given through the API without a refresh token is used as it is, until its
    expires; then only new consent helps."""
    app_id = await add_app(relay)
    payload = {
        "account": "static",
        "name": "Static",
        "email": MAIN,
        "oauth2": {"provider": app_id, "accessToken": "given-token"},
    }
    await call(relay, "POST", "/v1/account", payload)
    manager = tokens_of(relay)

    assert await manager.access_token("static") == (MAIN, "given-token")
    await _stale(relay, "static")
    with pytest.raises(ConsentRequired, match="expired") as caught:
        await manager.access_token("static")
    assert caught.value.recorded is False


async def test_unknown_account(relay: TestClient) -> None:
    """An account that does not exist is NotFound, not an authentication problem."""
    with pytest.raises(NotFound, match="not found"):
        await tokens_of(relay).access_token("ghost")


async def test_app_only_tokens(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """outlookService accounts get client-credentials tokens per resource, cached; a shared
    account on such an app logs in as itself with the app's token."""
    app_id = await add_sandbox_app(relay, sandbox, provider="outlookService")
    await call(
        relay,
        "POST",
        "/v1/account",
        {"account": "svc", "name": "Service", "email": MAIN, "oauth2": {"provider": app_id}},
    )
    await call(
        relay,
        "POST",
        "/v1/account",
        {
            **SHARED_PAYLOAD,
            "oauth2": {"auth": {"delegatedUser": SHARED, "delegatedAccount": "svc"}},
        },
    )
    manager = tokens_of(relay)

    user, graph = await manager.access_token("svc", GRAPH)
    _, exchange = await manager.access_token("svc", EXCHANGE)
    shared_user, shared_token = await manager.access_token("shared", EXCHANGE)

    assert user == MAIN
    assert (shared_user, shared_token) == (SHARED, exchange)
    assert await manager.access_token("svc", GRAPH) == (user, graph)
    graph_grant = await introspect(http, sandbox, graph)
    assert graph_grant["user"] is None
    assert graph_grant["resource"] == GRAPH
    assert "Mail.ReadWrite" in graph_grant["roles"]
    exchange_grant = await introspect(http, sandbox, exchange)
    assert exchange_grant["resource"] == EXCHANGE
    assert "IMAP.AccessAsApp" in exchange_grant["roles"]


async def test_app_only_wrong_secret(relay: TestClient, sandbox: RunningSandbox) -> None:
    """A wrong client secret of an app-only application is an AuthError naming AADSTS7000215."""
    app_id = await add_sandbox_app(
        relay, sandbox, provider="outlookService", clientSecret="wrong-secret"
    )
    await call(
        relay,
        "POST",
        "/v1/account",
        {"account": "svc", "name": "Service", "email": MAIN, "oauth2": {"provider": app_id}},
    )

    with pytest.raises(AuthError, match="AADSTS7000215"):
        await tokens_of(relay).access_token("svc", GRAPH)


async def test_no_token_or_secret_in_logs_or_responses(
    relay: TestClient,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Consent, refresh, revocation and new consent log and return no token, code or secret."""
    assert sandbox.seed is not None
    seen: set[str] = {sandbox.seed.client_secret}
    responses: list[str] = []

    async def api(method: str, path: str, body: Any = None) -> Any:
        resp = await relay.request(method, path, json=body)
        responses.append(await resp.text())
        return await resp.json()

    caplog.set_level(logging.INFO)
    with structlog.testing.capture_logs() as logs:
        app_id = await add_sandbox_app(relay, sandbox)
        for round_ in range(2):
            auth_uri = await open_link(relay, await form_link(relay, app_id))
            answer = await sign_in_at(http, auth_uri)
            seen.add(answer["code"])
            resp = await relay.post("/oauth", data=answer, allow_redirects=False)
            responses.append(await resp.text())
            seen.update((await _secrets(relay, "my-account")).values())
            if round_ == 0:
                await api("POST", "/v1/account", SHARED_PAYLOAD)
                await _stale(relay)
                seen.add((await tokens_of(relay).access_token("shared"))[1])
                seen.update((await _secrets(relay, "my-account")).values())
                await _stale(relay)
                await sandbox_admin(http, sandbox, f"users/{MAIN}/revoke")
                with pytest.raises(ConsentRequired):
                    await tokens_of(relay).access_token("shared")
        for path in ("/v1/accounts", "/v1/account/my-account", "/v1/account/shared"):
            await api("GET", path)
        await api("GET", f"/v1/oauth2/{app_id}")

    assert len(seen) >= 6
    text = json.dumps(logs, default=str) + caplog.text + "".join(responses)
    for secret in seen:
        assert secret not in text
