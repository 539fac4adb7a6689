"""The authorization code, refresh token and client credentials grants (pure rules).

These functions decide everything the identity endpoints answer; ``identity.py`` only
turns HTTP into calls here and results back into HTTP. Error names and AADSTS codes follow
Microsoft's (MICROSOFT.md lists the ones the relay acts on; the rest follow Microsoft's
error-code reference as far as it goes, so clients should act on ``error``, not on the
number). Where the sandbox is stricter than Microsoft it says so:

- PKCE with ``S256`` is required for every client (Microsoft requires it only for
  single-page apps), so a relay that forgets it fails here first.
- Redirect URIs match exactly, including the port of ``localhost`` addresses.
- The authorize endpoint accepts scopes of several resources (the user consents to all of
  them at once, as with MSAL's "extra scopes to consent"); each *token* request is for one
  resource (AADSTS28000), and one refresh token mints tokens for every consented resource.
- Refresh tokens rotate: every refresh returns a new one, and the old one keeps working
  until it expires (90 days after it was issued), as Microsoft does; revoking the user's
  sessions invalidates all of them (AADSTS50173).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from relay.sandbox.errors import IdentityError, RedirectTarget
from relay.sandbox.scopes import (
    DEFAULT,
    ScopeSet,
    canonical_resource,
    full_scope,
    parse_scopes,
    response_scope,
    unknown_resource,
)
from relay.sandbox.state import (
    ACCESS_TOKEN_LIFETIME,
    CODE_LIFETIME,
    SIGN_IN_LIFETIME,
    App,
    AuthCode,
    PendingSignIn,
    SandboxState,
    User,
    secrets_match,
)

RESPONSE_MODES = ("query", "fragment", "form_post")


class SignInRejected(Exception):
    """The sign-in form was filled in wrongly; show it again with this message."""


def _missing(name: str) -> IdentityError:
    return IdentityError(
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%m/%d/%Y %H:%M:%S")


def _app(state: SandboxState, client_id: str, tenant: str) -> App:
    app = state.apps.get(client_id)
    if app is None:
        raise IdentityError(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant.",
        )
    return app


# -- authorize ---------------------------------------------------------------------------


def authorize(state: SandboxState, tenant: str, params: Mapping[str, str]) -> PendingSignIn:
    """Validate an authorize request and keep it until the user signs in.

    Errors about the client or the redirect URI are shown to the user; the others carry a
    :class:`RedirectTarget` and go back to the app, as Microsoft does.
    """
    state.resolve_tenant(tenant)
    client_id = params.get("client_id", "")
    if not client_id:
        raise _missing("client_id")
    app = _app(state, client_id, tenant)
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        raise _missing("redirect_uri")
    if redirect_uri not in app.redirect_uris:
        raise IdentityError(
            "invalid_request",
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the "
            f"redirect URIs configured for the application '{client_id}'. Make sure the "
            "redirect URI sent in the request matches one added to your application.",
        )
    response_mode = params.get("response_mode", "query")
    if response_mode not in RESPONSE_MODES:
        raise IdentityError(
            "invalid_request",
            900352,
            f"The provided value for the input parameter 'response_mode' is not valid: "
            f"'{response_mode}'.",
        )
    target = RedirectTarget(redirect_uri, params.get("state"), response_mode)
    try:
        return _pending(state, app, params)
    except IdentityError as exc:
        raise exc.redirected_to(target) from None


def _pending(state: SandboxState, app: App, params: Mapping[str, str]) -> PendingSignIn:
    response_type = params.get("response_type", "")
    if not response_type:
        raise _missing("response_type")
    if response_type != "code":
        raise IdentityError(
            "unsupported_response_type",
            700054,
            f"response_type '{response_type}' is not enabled for the application.",
        )
    raw_scope = params.get("scope", "")
    if not raw_scope.strip():
        raise _missing("scope")
    scopes = parse_scopes(raw_scope)
    challenge = params.get("code_challenge", "")
    method = params.get("code_challenge_method", "")
    if not challenge or method != "S256":
        raise IdentityError(
            "invalid_request",
            9002325,
            "Proof Key for Code Exchange is required: send code_challenge with "
            "code_challenge_method=S256.",
        )
    if params.get("prompt") == "none":
        raise IdentityError(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in.",
        )
    pending = PendingSignIn(
        id=secrets.token_urlsafe(24),
        client_id=app.client_id,
        redirect_uri=params["redirect_uri"],
        state=params.get("state"),
        response_mode=params.get("response_mode", "query"),
        scopes=scopes,
        raw_scope=raw_scope,
        code_challenge=challenge,
        nonce=params.get("nonce"),
        login_hint=params.get("login_hint", ""),
        expires_at=state.now() + SIGN_IN_LIFETIME,
    )
    state.keep_pending(pending)
    return pending


def pending_sign_in(state: SandboxState, pending_id: str) -> PendingSignIn:
    """The authorize request a sign-in form belongs to."""
    pending = state.pending.get(pending_id)
    if pending is None or pending.expires_at <= state.now():
        raise IdentityError(
            "invalid_request", 50089, "Authentication failed due to flow token expired."
        )
    return pending


def sign_in(
    state: SandboxState, pending: PendingSignIn, email: str, password: str, *, accept: bool
) -> AuthCode:
    """Complete a sign-in: check the password, record consent, issue a code.

    A wrong password raises :class:`SignInRejected`; declining consent raises an
    ``access_denied`` error for the redirect URI.
    """
    target = RedirectTarget(pending.redirect_uri, pending.state, pending.response_mode)
    if not accept:
        raise IdentityError(
            "access_denied", 65004, "User declined to consent to access the app.", redirect=target
        )
    user = state.users.get(email.strip().lower())
    if user is not None and user.shared:
        raise SignInRejected("AADSTS50057: The user account is disabled.")
    if user is None or user.password is None or not secrets_match(password, user.password):
        raise SignInRejected(
            "AADSTS50126: Error validating credentials due to invalid username or password."
        )
    state.pending.pop(pending.id, None)
    state.consented(user.email, pending.client_id).update(pending.scopes.consentable())
    return state.new_code(pending, user.email)


# -- token -------------------------------------------------------------------------------


def token(
    state: SandboxState,
    tenant: str,
    form: Mapping[str, str],
    *,
    basic: tuple[str, str] | None,
    issuer: str,
) -> dict[str, Any]:
    """Answer a token request; raises :class:`IdentityError` as Microsoft would answer."""
    tenant_id = state.resolve_tenant(tenant)
    grant_type = form.get("grant_type", "")
    if not grant_type:
        raise _missing("grant_type")
    if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
        raise IdentityError(
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )
    app = _authenticate_client(state, tenant, form, basic)
    if grant_type == "authorization_code":
        return _redeem_code(state, app, form, issuer)
    if grant_type == "refresh_token":
        return _refresh(state, app, form, issuer)
    if tenant_id is None:
        raise IdentityError(
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by "
            "any provided credentials.",
        )
    return _client_credentials(state, app, form, issuer)


def _authenticate_client(
    state: SandboxState, tenant: str, form: Mapping[str, str], basic: tuple[str, str] | None
) -> App:
    client_id = form.get("client_id") or (basic[0] if basic else "")
    if not client_id:
        raise _missing("client_id")
    app = _app(state, client_id, tenant)
    secret = form.get("client_secret") or (basic[1] if basic and basic[0] == client_id else "")
    if not secret:
        raise IdentityError(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
            status=401,
        )
    if not secrets_match(secret, app.client_secret):
        raise IdentityError(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            f"the client secret value, not the client secret ID, for a secret added to app "
            f"'{app.client_id}'.",
            status=401,
        )
    return app


def _pkce_ok(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return secrets_match(computed, challenge)


def _redeem_code(
    state: SandboxState, app: App, form: Mapping[str, str], issuer: str
) -> dict[str, Any]:
    value = form.get("code", "")
    if not value:
        raise _missing("code")
    raw_scope = form.get("scope", "")
    if not raw_scope.strip():
        raise IdentityError(
            "invalid_request",
            28003,
            "Provided value for the input parameter scope cannot be empty when requesting an "
            "access token using the provided authorization code. Please specify a valid scope.",
        )
    code = state.codes.get(value)
    if code is None:
        raise IdentityError(
            "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
        )
    if code.client_id != app.client_id:
        raise IdentityError("invalid_grant", 70000, "Provided grant is invalid or malformed.")
    if code.redeemed:
        raise IdentityError(
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid "
            "code or use an existing refresh token.",
        )
    if code.issued_at + CODE_LIFETIME <= state.now():
        raise _expired_grant()
    redirect_uri = form.get("redirect_uri", "")
    if redirect_uri != code.redirect_uri:
        raise IdentityError(
            "invalid_grant",
            500112,
            f"The reply address '{redirect_uri}' does not match the reply address "
            f"'{code.redirect_uri}' provided when requesting Authorization code.",
        )
    if not _pkce_ok(form.get("code_verifier", ""), code.code_challenge):
        raise IdentityError(
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the "
            "authorization request.",
        )
    requested = parse_scopes(raw_scope)
    user = state.users[code.user]
    resource, granted = _consented_scopes(state, app, user, requested, raw_scope)
    code.redeemed = True
    oidc = requested.oidc | code.scopes.oidc
    return _issue(
        state,
        app,
        user,
        issuer=issuer,
        resource=resource,
        granted=granted,
        oidc=oidc,
        nonce=code.nonce,
        refresh="offline_access" in oidc,
        client_info=form.get("client_info") == "1",
    )


def _expired_grant() -> IdentityError:
    return IdentityError(
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    )


def _refresh(state: SandboxState, app: App, form: Mapping[str, str], issuer: str) -> dict[str, Any]:
    value = form.get("refresh_token", "")
    if not value:
        raise _missing("refresh_token")
    raw_scope = form.get("scope", "")
    if not raw_scope.strip():
        raise _missing("scope")
    record = state.refresh_tokens.get(value)
    if record is None:
        raise IdentityError(
            "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
        )
    if record.client_id != app.client_id:
        raise IdentityError("invalid_grant", 70000, "Provided grant is invalid or malformed.")
    user = state.users[record.user]
    if record.issued_at < user.tokens_valid_from:
        raise IdentityError(
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is "
            "needed. The user might have changed or reset their password. The grant was "
            f"issued on '{_iso(record.issued_at)}' and the TokensValidFrom date (before which "
            f"tokens are not valid) for this user is '{_iso(user.tokens_valid_from)}'.",
        )
    if record.expires_at <= state.now():
        raise IdentityError(
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was issued on "
            f"{_iso(record.issued_at)} and was inactive for 90.00:00:00.",
        )
    requested = parse_scopes(raw_scope)
    resource, granted = _consented_scopes(state, app, user, requested, raw_scope)
    return _issue(
        state,
        app,
        user,
        issuer=issuer,
        resource=resource,
        granted=granted,
        oidc=requested.oidc,
        nonce=None,
        refresh=True,
        client_info=form.get("client_info") == "1",
    )


def _consented_scopes(
    state: SandboxState, app: App, user: User, requested: ScopeSet, raw_scope: str
) -> tuple[str, frozenset[str]]:
    """The token's resource and every permission of it the user consented to.

    Asking for a permission that was never consented to is AADSTS65001.
    """
    resource, names = requested.single_resource(raw_scope)
    consented = state.consented(user.email, app.client_id)
    prefix = full_scope(resource, "")
    granted = frozenset(s.removeprefix(prefix) for s in consented if s.startswith(prefix))
    wanted = names - {DEFAULT}
    if not wanted <= granted or (DEFAULT in names and not granted):
        raise IdentityError(
            "invalid_grant",
            65001,
            f"The user or administrator has not consented to use the application with ID "
            f"'{app.client_id}' named '{app.display_name}'. Send an interactive "
            "authorization request for this user and resource.",
            suberror="consent_required",
        )
    return resource, granted


def _issue(
    state: SandboxState,
    app: App,
    user: User,
    *,
    issuer: str,
    resource: str,
    granted: frozenset[str],
    oidc: frozenset[str],
    nonce: str | None,
    refresh: bool,
    client_info: bool,
) -> dict[str, Any]:
    access = state.new_access_token(
        app, issuer=issuer, resource=resource, user=user, scopes=granted
    )
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": response_scope(resource, granted, oidc),
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "ext_expires_in": ACCESS_TOKEN_LIFETIME,
        "access_token": access.value,
    }
    if refresh:
        body["refresh_token"] = state.new_refresh_token(app.client_id, user.email).value
    if "openid" in oidc:
        body["id_token"] = state.id_token(
            app, user, issuer=issuer, nonce=nonce, email="email" in oidc
        )
    if client_info:
        body["client_info"] = state.client_info(user)
    return body


def _client_credentials(
    state: SandboxState, app: App, form: Mapping[str, str], issuer: str
) -> dict[str, Any]:
    raw_scope = form.get("scope", "")
    scopes = raw_scope.split()
    if not scopes:
        raise _missing("scope")
    if len(scopes) > 1:
        raise IdentityError(
            "invalid_scope",
            70011,
            "The provided request must include a 'scope' input parameter. The provided value "
            f"for the input parameter 'scope' is not valid. The scope {raw_scope} is not valid.",
        )
    prefix, _, name = scopes[0].rpartition("/")
    if name != DEFAULT:
        raise IdentityError(
            "invalid_scope",
            1002012,
            f"The provided value for scope {raw_scope} is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    resource = canonical_resource(prefix)
    if resource is None:
        raise unknown_resource(prefix)
    roles = app.app_permissions.get(resource, frozenset())
    access = state.new_access_token(app, issuer=issuer, resource=resource, roles=roles)
    return {
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "ext_expires_in": ACCESS_TOKEN_LIFETIME,
        "access_token": access.value,
    }
