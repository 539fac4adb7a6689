"""The tenant model and the grant rules, without HTTP."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from relay.errors import Conflict, InputError, NotFound
from relay.sandbox import oauth
from relay.sandbox.errors import IdentityError
from relay.sandbox.scopes import (
    GRAPH,
    OUTLOOK,
    parse_application_permission,
    parse_scopes,
    response_scope,
)
from relay.sandbox.seed import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, seed_demo_tenant
from relay.sandbox.signing import Signer
from relay.sandbox.state import PendingSignIn, SandboxClock, SandboxState

ISSUER = "https://sandbox.test"
VERIFIER = "a-code-verifier-that-is-long-enough-for-pkce-0123456789"
CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
)
IMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"


class FixedClock(SandboxClock):
    """Starts at a known instant so lifetimes can be checked to the second."""

    def now(self) -> float:
        return 1_800_000_000.0 + self.offset


@pytest.fixture
def state(signer: Signer) -> SandboxState:
    tenant = SandboxState(signer=signer, clock=FixedClock())
    seed_demo_tenant(tenant)
    return tenant


def _authorize(state: SandboxState, scope: str) -> PendingSignIn:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": scope,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "nonce": "n-1",
    }
    return oauth.authorize(state, "common", params)


def _code(state: SandboxState, scope: str = f"{IMAP} offline_access openid") -> str:
    pending = _authorize(state, scope)
    code = oauth.sign_in(state, pending, "main@example.com", "sandbox-password", accept=True)
    return code.value


def _redeem(state: SandboxState, value: str, **overrides: str) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": value,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        "scope": f"{IMAP} offline_access openid",
        **overrides,
    }
    return oauth.token(state, "common", form, basic=None, issuer=ISSUER)


def _refresh(state: SandboxState, refresh_token: str, scope: str = IMAP) -> dict[str, Any]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "scope": scope,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    return oauth.token(state, "common", form, basic=None, issuer=ISSUER)


# -- scopes ------------------------------------------------------------------------------


def test_bare_permission_names_are_graph_and_case_insensitive() -> None:
    """``mail.read`` means Microsoft Graph's Mail.Read, as at Microsoft."""
    parsed = parse_scopes("mail.read OFFLINE_ACCESS openid")

    assert parsed.resources == {GRAPH: frozenset({"Mail.Read"})}
    assert parsed.oidc == frozenset({"offline_access", "openid"})


def test_exchange_host_names_are_one_resource() -> None:
    """outlook.office.com and outlook.office365.com name the same resource."""
    parsed = parse_scopes(
        "https://outlook.office365.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send"
    )

    assert parsed.resources == {OUTLOOK: frozenset({"IMAP.AccessAsUser.All", "SMTP.Send"})}


@pytest.mark.parametrize(
    ("scope", "error", "code"),
    [
        ("Mail.ReadEverything", "invalid_scope", 70011),
        ("https://outlook.office.com/Mail.Teleport", "invalid_scope", 70011),
        ("https://unknown.example/read", "invalid_resource", 500011),
    ],
)
def test_unknown_scopes_are_errors(scope: str, error: str, code: int) -> None:
    """Typos in a scope fail as they would at Microsoft."""
    with pytest.raises(IdentityError) as caught:
        parse_scopes(scope)

    assert (caught.value.error, caught.value.code) == (error, code)


def test_token_request_with_two_resources_is_28000() -> None:
    """A token request names one resource only."""
    raw = f"{IMAP} Mail.Read"

    with pytest.raises(IdentityError) as caught:
        parse_scopes(raw).single_resource(raw)

    assert caught.value.code == 28000


@pytest.mark.parametrize(
    ("resource", "names", "oidc", "expected"),
    [
        (
            GRAPH,
            {"Mail.Read", "User.Read"},
            {"openid", "offline_access"},
            "openid Mail.Read User.Read",
        ),
        (OUTLOOK, {"SMTP.Send"}, {"openid", "profile"}, "https://outlook.office.com/SMTP.Send"),
    ],
)
def test_response_scope_spelling(
    resource: str, names: set[str], oidc: set[str], expected: str
) -> None:
    """Graph scopes come back by bare name with OIDC scopes; others as full URIs alone."""
    assert response_scope(resource, names, oidc) == expected


def test_application_permissions_are_checked() -> None:
    """Application permissions must exist on their resource."""
    assert parse_application_permission("mail.send") == (GRAPH, "Mail.Send")
    with pytest.raises(ValueError, match=r"IMAP\.AccessAsUser\.All"):
        parse_application_permission("https://outlook.office.com/IMAP.AccessAsUser.All")


# -- directory ---------------------------------------------------------------------------


def test_mailboxes_are_own_plus_granted(state: SandboxState) -> None:
    """A user opens their own mailbox and granted ones; a shared mailbox opens none itself."""
    state.add_user("ann@example.com", password="pw")
    state.set_grant("ann@example.com", "shared@example.com")
    state.set_grant("ann@example.com", "main@example.com", send_as=True)

    assert state.mailboxes_of("ann@example.com") == [
        "ann@example.com",
        "main@example.com",
        "shared@example.com",
    ]
    assert state.send_as_of("ann@example.com") == ["ann@example.com", "main@example.com"]
    assert state.mailboxes_of("shared@example.com") == []


def test_directory_input_errors(state: SandboxState) -> None:
    """Duplicate, unknown and self-referencing entries are refused with the field named."""
    with pytest.raises(Conflict) as duplicate:
        state.add_user("Main@Example.com", password="x")
    with pytest.raises(NotFound) as unknown:
        state.set_grant("main@example.com", "ghost@example.com")
    with pytest.raises(InputError) as own:
        state.set_grant("main@example.com", "main@example.com")

    assert (duplicate.value.field, unknown.value.field, own.value.field) == (
        "email",
        "mailbox",
        "mailbox",
    )


def test_tenant_segments(state: SandboxState) -> None:
    """common, organizations, the tenant id and any user domain name the tenant; others fail."""
    assert state.resolve_tenant("common") is None
    assert state.resolve_tenant("organizations") is None
    assert state.resolve_tenant(state.tenant_id) == state.tenant_id
    assert state.resolve_tenant("example.com") == state.tenant_id
    assert state.resolve_tenant("sandbox.onmicrosoft.com") == state.tenant_id
    with pytest.raises(IdentityError, match="AADSTS90002"):
        state.resolve_tenant("consumers")


# -- codes and tokens --------------------------------------------------------------------


def test_code_lives_ten_minutes(state: SandboxState) -> None:
    """A code redeemed at 599 s works; at 600 s it is AADSTS70008."""
    early, late = _code(state), _code(state)
    state.advance_clock(599)
    assert "access_token" in _redeem(state, early)

    state.advance_clock(1)
    with pytest.raises(IdentityError) as caught:
        _redeem(state, late)

    assert (caught.value.error, caught.value.code) == ("invalid_grant", 70008)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"code_verifier": "another-verifier-entirely-0123456789-abcdefghij"}, 501481),
        ({"code_verifier": ""}, 501481),
        ({"redirect_uri": "http://127.0.0.1:3000/other"}, 500112),
        ({"code": "never-issued"}, 9002313),
    ],
)
def test_code_redemption_checks(state: SandboxState, overrides: dict[str, str], code: int) -> None:
    """The PKCE verifier and redirect URI must match the authorize request."""
    value = _code(state)

    with pytest.raises(IdentityError) as caught:
        _redeem(state, value, **overrides)

    assert (caught.value.error, caught.value.code) == ("invalid_grant", code)
    assert state.codes[value].redeemed is False


def test_id_token_echoes_the_nonce_and_client_info(state: SandboxState) -> None:
    """The ID token carries the authorize nonce; client_info comes when asked for."""
    body = _redeem(state, _code(state), client_info="1")
    claims = base64.urlsafe_b64decode(body["id_token"].split(".")[1] + "==")

    assert b'"nonce":"n-1"' in claims
    assert "client_info" in body
    assert "client_info" not in _redeem(state, _code(state))


def test_no_refresh_token_without_offline_access(state: SandboxState) -> None:
    """Without offline_access there is no refresh token, without openid no ID token."""
    body = _redeem(state, _code(state, scope=IMAP), scope=IMAP)

    assert "refresh_token" not in body
    assert "id_token" not in body
    assert body["expires_in"] == 3599


def test_refresh_token_lives_ninety_days(state: SandboxState) -> None:
    """A refresh token unused for 90 days is AADSTS700082."""
    refresh_token = _redeem(state, _code(state))["refresh_token"]
    state.advance_clock(90 * 86400)

    with pytest.raises(IdentityError) as caught:
        _refresh(state, refresh_token)

    assert caught.value.code == 700082


def test_revocation_cuts_every_refresh_token(state: SandboxState) -> None:
    """Revoking the user's sessions invalidates old and rotated refresh tokens alike."""
    first = _redeem(state, _code(state))["refresh_token"]
    rotated = _refresh(state, first)["refresh_token"]
    state.advance_clock(1)

    assert state.revoke_user("main@example.com") == (2, 0)
    for token in (first, rotated):
        with pytest.raises(IdentityError) as caught:
            _refresh(state, token)
        assert caught.value.code == 50173


def test_refresh_token_of_another_app_is_refused(state: SandboxState) -> None:
    """A refresh token only works for the app it was issued to."""
    refresh_token = _redeem(state, _code(state))["refresh_token"]
    state.add_app("other", "other-secret", ["https://other.example/cb"])

    with pytest.raises(IdentityError) as caught:
        oauth.token(
            state,
            "common",
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "scope": IMAP,
                "client_id": "other",
                "client_secret": "other-secret",
            },
            basic=None,
            issuer=ISSUER,
        )

    assert (caught.value.error, caught.value.code) == ("invalid_grant", 70000)


def test_client_secret_may_come_as_basic_auth(state: SandboxState) -> None:
    """client_secret_basic works like client_secret_post; a missing secret is 7000218."""
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    body = oauth.token(
        state, state.tenant_id, form, basic=(CLIENT_ID, CLIENT_SECRET), issuer=ISSUER
    )
    with pytest.raises(IdentityError) as caught:
        oauth.token(
            state, state.tenant_id, {**form, "client_id": CLIENT_ID}, basic=None, issuer=ISSUER
        )

    assert "access_token" in body
    assert "refresh_token" not in body
    assert (caught.value.error, caught.value.status, caught.value.code) == (
        "invalid_client",
        401,
        7000218,
    )


def test_app_only_token_without_roles_reaches_no_mailbox(state: SandboxState) -> None:
    """An app with no application permission gets a token that opens nothing."""
    state.add_app("bare", "bare-secret", ["https://bare.example/cb"])
    body = oauth.token(
        state,
        state.tenant_id,
        {
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
            "client_id": "bare",
            "client_secret": "bare-secret",
        },
        basic=None,
        issuer=ISSUER,
    )

    granted = state.introspect(body["access_token"])
    assert (granted["roles"], granted["mailboxes"], granted["sendAs"]) == ([], [], [])


def test_snapshot_lists_active_tokens_only(state: SandboxState) -> None:
    """The grants snapshot holds live access tokens with owner and mailboxes."""
    token = _redeem(state, _code(state))["access_token"]

    live = state.snapshot()
    state.advance_clock(3599)

    assert live[token]["owner"] == "main@example.com"
    assert live[token]["mailboxes"] == ["main@example.com", "shared@example.com"]
    assert state.snapshot() == {}


def test_sign_in_page_expires_after_an_hour(state: SandboxState) -> None:
    """A sign-in form posted an hour after the authorize request is AADSTS50089."""
    pending = _authorize(state, IMAP)
    state.advance_clock(3600)

    with pytest.raises(IdentityError) as caught:
        oauth.pending_sign_in(state, pending.id)

    assert caught.value.code == 50089
    assert caught.value.redirect is None
