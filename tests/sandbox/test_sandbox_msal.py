"""The delegated flow, end to end: msal against the sandbox over https."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relay.sandbox.browser import SignInFailed, sign_in
from relay.sandbox.server import RunningSandbox

from .conftest import IMAP, MAIL_READ, MAIL_SEND_SHARED, SMTP, MsalClient


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def _admin(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(f"{sandbox.url}/sandbox/{path}", json=body) as response:
        assert response.status < 300, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def test_auth_code_flow_issues_tokens(client: MsalClient, sandbox: RunningSandbox) -> None:
    """msal completes the auth code flow: access, refresh and ID token, client_info."""
    result = await client.sign_in([IMAP, SMTP])

    assert "error" not in result, result
    assert result["token_type"] == "Bearer"
    assert result["scope"].split() == [IMAP, SMTP]
    assert result["refresh_token"]
    assert result["id_token_claims"]["preferred_username"] == "main@example.com"
    assert result["id_token_claims"]["tid"] == sandbox.state.tenant_id
    info = json.loads(_b64decode(result["client_info"]))
    user = sandbox.state.users["main@example.com"]
    assert info == {"uid": user.object_id, "utid": sandbox.state.tenant_id}
    granted = sandbox.state.introspect(result["access_token"])
    assert granted["resource"] == "https://outlook.office.com"
    assert granted["scopes"] == ["IMAP.AccessAsUser.All", "SMTP.Send"]


async def test_msal_token_cache_knows_the_account(client: MsalClient) -> None:
    """msal builds its account from the ID token and client_info the sandbox returns."""
    await client.sign_in([IMAP])

    accounts = client.app.get_accounts()

    assert [a["username"] for a in accounts] == ["main@example.com"]


async def test_id_token_is_signed_with_the_published_key(
    client: MsalClient, sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    """The ID token's RS256 signature verifies with the key from jwks_uri."""
    result = await client.sign_in([IMAP])
    async with http.get(
        f"{sandbox.url}/{sandbox.state.tenant_id}/v2.0/.well-known/openid-configuration"
    ) as response:
        jwks_uri = (await response.json())["jwks_uri"]
    async with http.get(jwks_uri) as response:
        (key,) = (await response.json())["keys"]

    header, payload, signature = result["id_token"].split(".")
    assert json.loads(_b64decode(header))["kid"] == key["kid"]
    public = rsa.RSAPublicNumbers(
        int.from_bytes(_b64decode(key["e"]), "big"), int.from_bytes(_b64decode(key["n"]), "big")
    ).public_key()
    public.verify(
        _b64decode(signature),
        f"{header}.{payload}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


async def test_refresh_rotates_and_old_token_keeps_working(client: MsalClient) -> None:
    """Each refresh returns a new refresh token; the previous one still works, as at Microsoft."""
    first = await client.sign_in([IMAP])

    second = await client.refresh(first["refresh_token"], [IMAP])
    again = await client.refresh(first["refresh_token"], [IMAP])

    assert "error" not in second
    assert "error" not in again
    assert second["refresh_token"] != first["refresh_token"]
    assert again["refresh_token"] not in (first["refresh_token"], second["refresh_token"])
    assert second["access_token"] != first["access_token"]


async def test_one_refresh_token_serves_every_consented_resource(
    client: MsalClient, sandbox: RunningSandbox
) -> None:
    """Consent to Exchange and Graph at once; redeem for one, refresh for the other."""
    first = await client.sign_in([IMAP, MAIL_READ], token_scopes=[IMAP])
    graph = await client.refresh(first["refresh_token"], [MAIL_READ])

    assert "error" not in first, first
    assert "error" not in graph, graph
    assert set(graph["scope"].split()) == {"openid", "profile", "Mail.Read"}
    assert sandbox.state.introspect(graph["access_token"])["resource"] == (
        "https://graph.microsoft.com"
    )


async def test_mixed_resources_in_one_token_request_is_28000(client: MsalClient) -> None:
    """Graph and Exchange scopes in one token request fail with AADSTS28000."""
    result = await client.sign_in([IMAP, MAIL_READ])

    assert result["error"] == "invalid_request"
    assert result["error_codes"] == [28000]
    assert result["error_description"].startswith("AADSTS28000:")


async def test_code_can_be_redeemed_once(client: MsalClient, http: aiohttp.ClientSession) -> None:
    """A second redemption of the same code is invalid_grant AADSTS54005."""
    flow = await client.flow([IMAP])
    response = await sign_in(http, flow["auth_uri"], "main@example.com", "sandbox-password")
    first = await client.redeem(dict(flow), response)

    second = await client.redeem(dict(flow), response)

    assert "access_token" in first
    assert second["error"] == "invalid_grant"
    assert second["error_codes"] == [54005]


async def test_code_expires_after_ten_minutes(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A code redeemed after ten minutes is invalid_grant AADSTS70008."""
    flow = await client.flow([IMAP])
    response = await sign_in(http, flow["auth_uri"], "main@example.com", "sandbox-password")
    await _admin(http, sandbox, "clock", {"advanceSeconds": 601})

    result = await client.redeem(flow, response)

    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [70008]


async def test_wrong_client_secret_is_7000215(msal_client: Any) -> None:
    """Redeeming with a wrong client secret is invalid_client AADSTS7000215."""
    client = await msal_client(secret="not-the-secret")

    result = await client.sign_in([IMAP])

    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


async def test_token_errors_have_microsofts_shape(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A bad secret answers 401 with error, AADSTS description, codes, trace and correlation ids."""
    assert sandbox.seed is not None
    async with http.post(
        f"{sandbox.url}/common/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "x",
            "scope": IMAP,
            "client_id": sandbox.seed.client_id,
            "client_secret": "wrong",
        },
        headers={"client-request-id": "11111111-2222-3333-4444-555555555555"},
    ) as response:
        body = await response.json()
        status = response.status

    assert status == 401
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert body["error_codes"] == [7000215]
    assert body["correlation_id"] == "11111111-2222-3333-4444-555555555555"
    assert body["trace_id"]
    assert body["timestamp"]


async def test_unregistered_redirect_uri_shows_an_error_page(
    client: MsalClient, http: aiohttp.ClientSession
) -> None:
    """A redirect URI not registered for the app is refused on a page, never redirected to."""
    flow = await client.flow([IMAP], redirect_uri="http://127.0.0.1:3000/elsewhere")

    with pytest.raises(SignInFailed, match="AADSTS50011"):
        await sign_in(http, flow["auth_uri"], "main@example.com", "sandbox-password")
    async with http.get(flow["auth_uri"], allow_redirects=False) as response:
        assert response.status == 400
        assert "Location" not in response.headers


async def _authorize(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, **overrides: str
) -> aiohttp.ClientResponse:
    assert sandbox.seed is not None
    params = {
        "client_id": sandbox.seed.client_id,
        "response_type": "code",
        "redirect_uri": sandbox.seed.redirect_uri,
        "scope": f"{IMAP} offline_access",
        "state": "st",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        **overrides,
    }
    params = {k: v for k, v in params.items() if v}
    url = f"{sandbox.url}/common/oauth2/v2.0/authorize?{urlencode(params)}"
    return await http.get(url, allow_redirects=False)


@pytest.mark.parametrize(
    ("overrides", "error", "code"),
    [
        ({"code_challenge": ""}, "invalid_request", "9002325"),
        ({"code_challenge_method": "plain"}, "invalid_request", "9002325"),
        ({"response_type": "token"}, "unsupported_response_type", "700054"),
        ({"scope": "https://outlook.office.com/IMAP.ReadEverything"}, "invalid_scope", "70011"),
        ({"scope": "https://example.com/api/read"}, "invalid_resource", "500011"),
        ({"prompt": "none"}, "login_required", "50058"),
    ],
)
async def test_bad_authorize_requests_go_back_with_an_error(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    overrides: dict[str, str],
    error: str,
    code: str,
) -> None:
    """Missing PKCE, wrong response_type, unknown scopes: redirected back with error=..."""
    async with await _authorize(http, sandbox, **overrides) as response:
        location = response.headers.get("Location", "")

    assert location.startswith("http://127.0.0.1:3000/oauth?")
    params = dict(parse_qsl(location.partition("?")[2]))
    assert params["error"] == error
    assert params["error_description"].startswith(f"AADSTS{code}:")
    assert params["state"] == "st"


async def test_query_response_mode_redirects_with_code_and_state(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """With the default response mode the sandbox redirects to redirect_uri?code=...&state=..."""
    async with await _authorize(http, sandbox) as response:
        auth_url = str(response.url)

    answer = await sign_in(http, auth_url, "main@example.com", "sandbox-password")

    assert set(answer) == {"code", "state"}
    assert answer["state"] == "st"
    assert answer["code"] in sandbox.state.codes


async def test_fragment_response_mode_puts_the_code_after_the_hash(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """response_mode=fragment returns the code in the redirect URI's fragment."""
    async with await _authorize(http, sandbox, response_mode="fragment") as response:
        auth_url = str(response.url)
        page = await response.text()
    flow = re.search(r'name="flow" value="([^"]+)"', page)
    assert flow is not None

    async with http.post(
        auth_url,
        data={"flow": flow.group(1), "login": "main@example.com", "passwd": "sandbox-password"},
        allow_redirects=False,
    ) as response:
        location = response.headers["Location"]

    assert location.startswith("http://127.0.0.1:3000/oauth#code=")
    assert location.endswith("&state=st")


async def test_unknown_client_shows_an_error_page(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """An unknown client_id is AADSTS700016 on a page."""
    async with await _authorize(http, sandbox, client_id="nobody") as response:
        page = await response.text()
        assert response.status == 400

    assert "AADSTS700016" in page


async def test_wrong_password_shows_the_form_again(client: MsalClient) -> None:
    """A wrong password is refused on the sign-in page (AADSTS50126), no code is issued."""
    with pytest.raises(SignInFailed, match="AADSTS50126"):
        await client.sign_in([IMAP], password="guess")


async def test_shared_mailbox_cannot_sign_in(client: MsalClient) -> None:
    """A shared mailbox's account is disabled (AADSTS50057)."""
    with pytest.raises(SignInFailed, match="AADSTS50057"):
        await client.sign_in([IMAP], email="shared@example.com", password="")


async def test_declining_consent_returns_access_denied(
    client: MsalClient, http: aiohttp.ClientSession
) -> None:
    """Cancel on the consent page sends error=access_denied (AADSTS65004) back to the app."""
    flow = await client.flow([IMAP])

    answer = await sign_in(
        http, flow["auth_uri"], "main@example.com", "sandbox-password", accept=False
    )

    assert answer["error"] == "access_denied"
    assert answer["error_description"].startswith("AADSTS65004:")
    assert answer["state"] == flow["state"]


async def test_revoked_sessions_refuse_refresh_with_50173(
    client: MsalClient, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """After the user's sessions are revoked a refresh token is invalid_grant AADSTS50173."""
    first = await client.sign_in([IMAP])
    await _admin(http, sandbox, "users/main@example.com/revoke", {})

    result = await client.refresh(first["refresh_token"], [IMAP])
    fresh = await client.sign_in([IMAP])

    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50173]
    assert "access_token" in fresh


async def test_refresh_for_unconsented_scope_is_65001(client: MsalClient) -> None:
    """Refreshing for a permission the user never consented to is consent_required AADSTS65001."""
    first = await client.sign_in([IMAP])

    result = await client.refresh(first["refresh_token"], [MAIL_SEND_SHARED])

    assert result["error"] == "invalid_grant"
    assert result["suberror"] == "consent_required"
    assert result["error_codes"] == [65001]


async def test_incremental_consent_adds_to_earlier_consent(client: MsalClient) -> None:
    """A second sign-in for more permissions keeps the first ones in the token."""
    await client.sign_in([IMAP])
    second = await client.sign_in([SMTP])

    assert second["scope"].split() == [IMAP, SMTP]


async def test_msal_can_use_the_sandboxs_instance_discovery(
    msal_client: Any, sandbox: RunningSandbox
) -> None:
    """msal given the sandbox's instance discovery URL validates the authority against it."""
    client = await msal_client(
        authority=f"{sandbox.url}/common",
        instance_discovery=f"{sandbox.url}/common/discovery/instance",
    )

    result = await client.sign_in([IMAP])

    assert "access_token" in result, result


async def test_discovery_for_common_and_for_an_unknown_tenant(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """common has a templated issuer; an unknown tenant is invalid_tenant AADSTS90002."""
    async with http.get(f"{sandbox.url}/common/v2.0/.well-known/openid-configuration") as resp:
        common = await resp.json()
    async with http.get(
        f"{sandbox.url}/nowhere.example/v2.0/.well-known/openid-configuration"
    ) as resp:
        unknown = await resp.json()
        unknown_status = resp.status

    assert common["issuer"] == f"{sandbox.url}/{{tenantid}}/v2.0"
    assert common["token_endpoint"] == f"{sandbox.url}/common/oauth2/v2.0/token"
    assert unknown_status == 400
    assert unknown["error"] == "invalid_tenant"
    assert unknown["error_codes"] == [90002]
