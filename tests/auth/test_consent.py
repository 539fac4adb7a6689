"""The consent flow against the sandbox: link, sign-in, /oauth, account with tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import certifi
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from relay.api.keys import CIPHER, STORE
from relay.auth.scopes import EXCHANGE
from relay.auth.tokens import secrets_context
from relay.config import Settings
from relay.sandbox.browser import SignInFailed
from relay.sandbox.server import RunningSandbox
from relay.store.schema import accounts, events, oauth2_flows
from tests.api.helpers import call
from tests.conftest import MakeClient

from .conftest import (
    DONE,
    HTML,
    MAIN,
    SHARED,
    SHARED_PAYLOAD,
    add_sandbox_app,
    consent,
    form_link,
    introspect,
    local,
    open_link,
    post_back,
    sign_in_at,
    tokens_of,
    with_microsoft,
)


async def _count(client: TestClient, table: Any) -> int:
    async with client.app[STORE].read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def _event_names(client: TestClient, account: str) -> list[str]:
    async with client.app[STORE].read() as conn:
        rows = await conn.execute(
            select(events.c.event).where(events.c.account == account).order_by(events.c.seq)
        )
        return [str(r) for r in rows.scalars()]


async def _secrets(client: TestClient, account: str) -> dict[str, str]:
    async with client.app[STORE].read() as conn:
        blob = await conn.scalar(select(accounts.c.secrets).where(accounts.c.id == account))
    value = client.app[CIPHER].decrypt_json(blob, context=secrets_context(account))
    return dict(value)


async def _nothing_stored(client: TestClient) -> None:
    assert await _count(client, accounts) == 0
    assert await _count(client, events) == 0


async def test_consent_creates_main_account_with_tokens(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Link -> Microsoft sign-in (PKCE, form_post) -> /oauth: the account holds the tokens."""
    assert sandbox.seed is not None
    app_id = await add_sandbox_app(relay, sandbox)
    link = await form_link(relay, app_id, email=MAIN)
    assert link.startswith("https://relay.example.com/oauth/start?data=")

    auth_uri = await open_link(relay, link)
    parts = urlsplit(auth_uri)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}" == sandbox.url
    assert parts.path == f"/{sandbox.seed.tenant_id}/oauth2/v2.0/authorize"
    assert query["response_mode"] == "form_post"
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == sandbox.seed.redirect_uri
    assert query["login_hint"] == MAIN
    assert set(query["scope"].split()) >= {
        f"{EXCHANGE}/IMAP.AccessAsUser.All",
        f"{EXCHANGE}/SMTP.Send",
        "offline_access",
    }

    answer = await sign_in_at(http, auth_uri)
    resp = await post_back(relay, answer)

    assert resp.status == 302, await resp.text()
    assert resp.headers["Location"] == f"{DONE}&account=my-account&state=new"
    view = await call(relay, "GET", "/v1/account/my-account")
    assert view["email"] == MAIN
    assert view["name"] == "Main"
    assert view["backend"] == "imap"
    assert view["oauth2"]["provider"] == app_id
    assert view["oauth2"]["auth"] == {"user": MAIN}
    assert view["secrets"]["oauth2.accessToken"] is True
    assert view["secrets"]["oauth2.refreshToken"] is True
    stored = await _secrets(relay, "my-account")
    for value in stored.values():
        assert value not in json.dumps(view)
    granted = await introspect(http, sandbox, stored["oauth2.accessToken"])
    assert granted["active"] is True
    assert granted["user"] == MAIN
    assert granted["resource"] == EXCHANGE
    assert await _event_names(relay, "my-account") == ["accountAdded"]
    assert await _count(relay, oauth2_flows) == 0


async def test_account_id_is_made_up_when_not_given(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """Without an account id the consent creates one, named in the redirect."""
    app_id = await add_sandbox_app(relay, sandbox)
    link = await form_link(relay, app_id, account=None, name=None)

    resp = await consent(relay, http, link)

    assert resp.status == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    (account,) = query["account"]
    view = await call(relay, "GET", f"/v1/account/{account}")
    assert view["email"] == MAIN
    assert view["name"] == "Main User"


async def test_delegated_form_makes_a_shared_mailbox_with_its_own_tokens(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """delegated: the main user signs in; the account is the shared address with user= it."""
    app_id = await add_sandbox_app(relay, sandbox)
    link = await form_link(relay, app_id, account="box", email=SHARED, delegated=True)

    resp = await consent(relay, http, link)

    assert resp.status == 302
    view = await call(relay, "GET", "/v1/account/box")
    assert view["email"] == SHARED
    assert view["oauth2"]["auth"] == {"user": MAIN, "delegatedUser": SHARED}
    user, token = await tokens_of(relay).access_token("box")
    assert user == SHARED
    assert (await introspect(http, sandbox, token))["user"] == MAIN


async def test_post_account_with_authorize_returns_a_consent_link(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """oauth2.authorize answers {redirect}; the account (with its settings) comes after consent."""
    app_id = await add_sandbox_app(relay, sandbox)
    payload = {
        "account": "my-account",
        "name": "Main",
        "email": MAIN,
        "imap": {"host": "imap.example.com", "port": 993},
        "path": ["\\Sent"],
        "oauth2": {"provider": app_id, "authorize": True, "redirectUrl": DONE},
    }

    result = await call(relay, "POST", "/v1/account", payload)

    assert set(result) == {"redirect"}
    await call(relay, "GET", "/v1/account/my-account", status=404)
    resp = await consent(relay, http, result["redirect"])
    assert resp.status == 302
    view = await call(relay, "GET", "/v1/account/my-account")
    assert view["imap"]["host"] == "imap.example.com"
    assert view["path"] == ["\\Sent"]
    assert view["oauth2"]["provider"] == app_id
    assert "authorize" not in view["oauth2"]
    assert "redirectUrl" not in view["oauth2"]
    assert view["secrets"]["oauth2.refreshToken"] is True


@pytest.mark.parametrize(
    ("oauth2", "field"),
    [
        ({"authorize": True, "redirectUrl": DONE}, "oauth2.provider"),
        ({"provider": "{app}", "authorize": True}, "oauth2.redirectUrl"),
        ({"provider": "nope", "authorize": True, "redirectUrl": DONE}, "oauth2.provider"),
        (
            {"provider": "{app}", "authorize": True, "redirectUrl": DONE, "refreshToken": "x"},
            "oauth2.refreshToken",
        ),
        (
            {
                "provider": "{app}",
                "authorize": True,
                "redirectUrl": DONE,
                "auth": {"delegatedUser": SHARED, "delegatedAccount": "main"},
            },
            "oauth2.auth.delegatedAccount",
        ),
    ],
)
async def test_authorize_bad_input(
    relay: TestClient, sandbox: RunningSandbox, oauth2: dict[str, Any], field: str
) -> None:
    """An authorize request that cannot lead to consent is refused, naming the field."""
    app_id = await add_sandbox_app(relay, sandbox)
    oauth2 = json.loads(json.dumps(oauth2).replace("{app}", app_id))
    payload = {"account": "a", "name": "A", "email": MAIN, "oauth2": oauth2}

    resp = await relay.post("/v1/account", json=payload)

    body = await resp.json()
    assert resp.status in (400, 404), body
    assert body["field"] == field
    await _nothing_stored(relay)


async def test_form_bad_input(relay: TestClient, sandbox: RunningSandbox) -> None:
    """Unknown or app-only applications, a missing address or redirectUrl: no link."""
    app_id = await add_sandbox_app(relay, sandbox)
    service_app = await add_sandbox_app(relay, sandbox, provider="outlookService")
    base = {"account": "a", "redirectUrl": DONE}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "type": "nope"}, 404, "type"),
        ({**base, "type": service_app}, 400, "type"),
        ({**base, "type": app_id, "delegated": True}, 400, "email"),
        ({**base, "type": app_id, "redirectUrl": "not a url"}, 400, "redirectUrl"),
        ({"type": app_id}, 400, "redirectUrl"),
    ]
    for body, status, field in cases:
        resp = await relay.post("/v1/authentication/form", json=body)
        error = await resp.json()
        assert resp.status == status, (body, error)
        assert error["field"] == field


async def test_form_refuses_a_shared_account(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A shared account borrows tokens: a consent link for it is refused."""
    app_id = await add_sandbox_app(relay, sandbox)
    await consent(relay, http, await form_link(relay, app_id))
    await call(relay, "POST", "/v1/account", SHARED_PAYLOAD)

    resp = await relay.post(
        "/v1/authentication/form", json={"account": "shared", "redirectUrl": DONE, "type": app_id}
    )

    error = await resp.json()
    assert resp.status == 400
    assert error["field"] == "account"
    assert "my-account" in error["message"]


async def test_forged_link_is_refused(relay: TestClient, sandbox: RunningSandbox) -> None:
    """A changed link (data or signature) gets an error page and starts nothing."""
    app_id = await add_sandbox_app(relay, sandbox)
    link = await form_link(relay, app_id)
    query = parse_qs(urlsplit(link).query)
    data, sig = query["data"][0], query["sig"][0]
    other = await form_link(relay, app_id, account="other")
    other_sig = parse_qs(urlsplit(other).query)["sig"][0]

    for path in (
        f"/oauth/start?data={data}&sig={other_sig}",
        f"/oauth/start?data={data[:-2]}&sig={sig}",
        f"/oauth/start?data={data}",
        "/oauth/start",
    ):
        resp = await relay.get(path, allow_redirects=False, headers=HTML)
        page = await resp.text()
        assert resp.status == 400, path
        assert resp.content_type == "text/html"
        assert "not valid" in page
    assert await _count(relay, oauth2_flows) == 0


async def test_errors_are_json_for_api_clients(relay: TestClient) -> None:
    """Without Accept: text/html the browser routes answer with the JSON error shape."""
    resp = await relay.get("/oauth/start?data=x&sig=y", allow_redirects=False)
    body = await resp.json()
    assert resp.status == 400
    assert body["code"] == "InputValidationError"
    assert "not valid" in body["message"]

    resp = await relay.post("/oauth", data={}, allow_redirects=False)
    body = await resp.json()
    assert resp.status == 400
    assert body["field"] == "state"


async def test_expired_link_is_refused(
    make_client: MakeClient, settings: Settings, sandbox: RunningSandbox
) -> None:
    """A link opened after consent_link_ttl gets an error page."""
    client = await make_client(with_microsoft(settings, sandbox, consent_link_ttl=1.0))
    app_id = await add_sandbox_app(client, sandbox)
    link = await form_link(client, app_id)
    await asyncio.sleep(2.1)

    resp = await client.get(local(link), allow_redirects=False, headers=HTML)

    assert resp.status == 400
    assert "expired" in await resp.text()
    assert await _count(client, oauth2_flows) == 0


async def test_application_deleted_after_the_link_was_made(
    relay: TestClient, sandbox: RunningSandbox
) -> None:
    """The link names an application that no longer exists: an error page."""
    app_id = await add_sandbox_app(relay, sandbox)
    link = await form_link(relay, app_id)
    await call(relay, "DELETE", f"/v1/oauth2/{app_id}")

    resp = await relay.get(local(link), allow_redirects=False, headers=HTML)

    assert resp.status == 404
    assert "unknown OAuth2 application" in await resp.text()


@pytest.mark.parametrize("state", ["made-up", "x" * 129, "a\x00b", "ünïcode"])
async def test_unknown_state_is_refused(relay: TestClient, state: str) -> None:
    """A redirect back naming no started sign-in stores nothing."""
    resp = await post_back(relay, {"code": "made-up", "state": state})

    assert resp.status == 400
    assert "unknown or was already completed" in await resp.text()
    await _nothing_stored(relay)


async def test_code_of_another_sign_in_is_refused(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A code redeemed with another sign-in's state fails PKCE at Microsoft; nothing stored."""
    app_id = await add_sandbox_app(relay, sandbox)
    first = await sign_in_at(http, await open_link(relay, await form_link(relay, app_id)))
    second = await sign_in_at(
        http, await open_link(relay, await form_link(relay, app_id, account="b"))
    )

    resp = await post_back(relay, {"code": second["code"], "state": first["state"]})

    assert resp.status == 400
    assert "AADSTS501481" in await resp.text()
    await _nothing_stored(relay)


async def test_replayed_answer_is_refused(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The same sign-in answer posted twice: the second finds nothing and changes nothing."""
    app_id = await add_sandbox_app(relay, sandbox)
    answer = await sign_in_at(http, await open_link(relay, await form_link(relay, app_id)))
    first = await post_back(relay, answer)
    before = await _secrets(relay, "my-account")

    again = await post_back(relay, answer)

    assert first.status == 302
    assert again.status == 400
    assert "already completed" in await again.text()
    assert await _secrets(relay, "my-account") == before
    assert await _event_names(relay, "my-account") == ["accountAdded"]


async def test_declined_consent_stores_nothing(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """The user cancels at Microsoft: an error page naming access_denied, no account."""
    app_id = await add_sandbox_app(relay, sandbox)
    auth_uri = await open_link(relay, await form_link(relay, app_id))
    answer = await sign_in_at(http, auth_uri, accept=False)

    resp = await post_back(relay, answer)

    assert resp.status == 400
    assert "access_denied" in await resp.text()
    await _nothing_stored(relay)


async def test_redirect_uri_not_registered_at_microsoft(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """An application whose redirectUrl Microsoft does not know never comes back (50011)."""
    app_id = await add_sandbox_app(relay, sandbox, redirectUrl="http://127.0.0.1:9/elsewhere")
    auth_uri = await open_link(relay, await form_link(relay, app_id))

    with pytest.raises(SignInFailed, match="AADSTS50011"):
        await sign_in_at(http, auth_uri)
    await _nothing_stored(relay)


async def test_answer_as_query_is_accepted(
    relay: TestClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """GET /oauth with the answer in the query works as the form POST does."""
    app_id = await add_sandbox_app(relay, sandbox)
    answer = await sign_in_at(http, await open_link(relay, await form_link(relay, app_id)))

    resp = await relay.get("/oauth", params=answer, allow_redirects=False, headers=HTML)

    assert resp.status == 302, await resp.text()
    assert (await call(relay, "GET", "/v1/account/my-account"))["email"] == MAIN


async def test_ca_bundle_setting_wins_over_requests_environment(
    relay: TestClient,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REQUESTS_CA_BUNDLE naming another CA does not override microsoft.ca_bundle."""
    other_ca = Path(certifi.where())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other_ca))
    app_id = await add_sandbox_app(relay, sandbox)

    resp = await consent(relay, http, await form_link(relay, app_id))

    assert resp.status == 302, await resp.text()
    await _stale_and_refresh(relay)


async def _stale_and_refresh(client: TestClient) -> None:
    await call(
        client, "PUT", "/v1/account/my-account", {"oauth2": {"expires": "2020-01-01T00:00:00Z"}}
    )
    user, _ = await tokens_of(client).access_token("my-account")
    assert user == MAIN


async def test_callback_with_a_broken_form_body(relay: TestClient) -> None:
    """A POST to /oauth whose body is not a form is a 400, not a server error."""
    resp = await relay.post(
        "/oauth", data=b"x", headers={"Content-Type": "multipart/form-data"}, allow_redirects=False
    )
    body = await resp.json()
    assert resp.status == 400
    assert "form" in body["message"]
