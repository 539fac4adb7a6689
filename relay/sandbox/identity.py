"""HTTP endpoints of the Microsoft identity platform (v2) that msal and azure-identity call.

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: OpenID Connect discovery.
- ``GET /{tenant}/discovery/v2.0/keys``: the signing key of ID and access tokens.
- ``GET /{tenant}/discovery/instance``: msal's instance discovery, for clients that pass
  this URL as ``instance_discovery``; clients usually pass ``instance_discovery=False``.
- ``GET /{tenant}/oauth2/v2.0/authorize``: the sign-in and consent page; the form is posted
  back to the same URL.
- ``POST /{tenant}/oauth2/v2.0/token``: the token endpoint.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import BasicAuth, web

from relay.sandbox import oauth, templates
from relay.sandbox.errors import IdentityError, RedirectTarget
from relay.sandbox.keys import STATE
from relay.sandbox.state import PendingSignIn, SandboxState

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def origin(request: web.Request) -> str:
    """``https://host:port`` as the client addressed the sandbox."""
    return f"{request.scheme}://{request.host}"


def error_response(request: web.Request, exc: IdentityError) -> web.Response:
    """Microsoft's JSON error body for the token and discovery endpoints."""
    state = request.app[STATE]
    timestamp = datetime.fromtimestamp(state.now(), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id = str(uuid.uuid4())
    correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
    body: dict[str, Any] = {
        "error": exc.error,
        "error_description": (
            f"{exc.description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}"
            f"\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [exc.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{origin(request)}/error?code={exc.code}",
    }
    if exc.suberror:
        body["suberror"] = exc.suberror
    return web.json_response(body, status=exc.status, headers=_NO_STORE)


async def openid_configuration(request: web.Request) -> web.Response:
    """OpenID Connect discovery document for a tenant (or ``common``/``organizations``)."""
    state = request.app[STATE]
    segment = request.match_info["tenant"]
    try:
        tenant_id = state.resolve_tenant(segment)
    except IdentityError as exc:
        return error_response(request, exc)
    base = f"{origin(request)}/{tenant_id or segment.lower()}"
    issuer_tenant = tenant_id or "{tenantid}"
    return web.json_response(
        {
            "issuer": f"{origin(request)}/{issuer_tenant}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code"],
            "response_modes_supported": list(oauth.RESPONSE_MODES),
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "client_credentials",
            ],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "nbf",
                "name",
                "nonce",
                "oid",
                "preferred_username",
                "email",
                "tid",
                "ver",
            ],
            "request_uri_parameter_supported": False,
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "msgraph_host": "graph.microsoft.com",
        }
    )


async def jwks(request: web.Request) -> web.Response:
    """The public key that signs the sandbox's tokens."""
    state = request.app[STATE]
    try:
        state.resolve_tenant(request.match_info["tenant"])
    except IdentityError as exc:
        return error_response(request, exc)
    return web.json_response(state.signer.jwks())


async def instance_discovery(request: web.Request) -> web.Response:
    """msal's instance discovery: confirms the sandbox is an authority and names its aliases."""
    endpoint = request.query.get("authorization_endpoint", "")
    parts = urlsplit(endpoint) if endpoint else None
    # msal names the instance by host name only, without the port.
    if parts is not None and parts.hostname != urlsplit(f"//{request.host}").hostname:
        return error_response(
            request, IdentityError("invalid_instance", 50049, "Unknown or invalid instance.")
        )
    tenant = parts.path.strip("/").split("/")[0] if parts and parts.path.strip("/") else "common"
    return web.json_response(
        {
            "tenant_discovery_endpoint": (
                f"{origin(request)}/{tenant}/v2.0/.well-known/openid-configuration"
            ),
            "api-version": "1.1",
            "metadata": [
                {
                    "preferred_network": request.host,
                    "preferred_cache": request.host,
                    "aliases": [request.host],
                }
            ],
        }
    )


def _redirect(target: RedirectTarget, fields: dict[str, str]) -> web.Response:
    if target.state is not None:
        fields = {**fields, "state": target.state}
    if target.response_mode == "form_post":
        return web.Response(
            text=templates.form_post_page(target.redirect_uri, fields), content_type="text/html"
        )
    separator = "#" if target.response_mode == "fragment" else "?"
    if separator == "?" and "?" in target.redirect_uri:
        separator = "&"
    location = f"{target.redirect_uri}{separator}{urlencode(fields)}"
    return web.Response(status=302, headers={"Location": location, **_NO_STORE})


def _error_page_or_redirect(exc: IdentityError) -> web.Response:
    if exc.redirect is not None:
        return _redirect(exc.redirect, {"error": exc.error, "error_description": exc.description})
    return web.Response(
        status=exc.status,
        text=templates.error_page(exc.error, exc.description),
        content_type="text/html",
    )


def _sign_in_page(
    request: web.Request,
    state: SandboxState,
    pending: PendingSignIn,
    *,
    login: str,
    error: str | None = None,
) -> web.Response:
    app = state.apps[pending.client_id]
    page = templates.sign_in_page(
        app=app.display_name,
        tenant=state.tenant_id,
        action=request.path,
        flow=pending.id,
        login=login,
        scopes=pending.raw_scope.split(),
        error=error,
    )
    return web.Response(text=page, content_type="text/html", headers=_NO_STORE)


async def authorize_page(request: web.Request) -> web.Response:
    """Validate an authorize request and show the sign-in and consent page."""
    state = request.app[STATE]
    params = dict(request.query.items())
    try:
        pending = oauth.authorize(state, request.match_info["tenant"], params)
    except IdentityError as exc:
        return _error_page_or_redirect(exc)
    return _sign_in_page(request, state, pending, login=pending.login_hint)


async def authorize_submit(request: web.Request) -> web.Response:
    """Take the sign-in form: redirect with a code, or show the form again."""
    state = request.app[STATE]
    form = await request.post()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    login = fields.get("login", "")
    try:
        pending = oauth.pending_sign_in(state, fields.get("flow", ""))
    except IdentityError as exc:
        return _error_page_or_redirect(exc)
    try:
        code = oauth.sign_in(
            state,
            pending,
            login,
            fields.get("passwd", ""),
            accept=fields.get("action", "accept") == "accept",
        )
    except oauth.SignInRejected as exc:
        return _sign_in_page(request, state, pending, login=login, error=str(exc))
    except IdentityError as exc:
        return _error_page_or_redirect(exc)
    target = RedirectTarget(pending.redirect_uri, pending.state, pending.response_mode)
    return _redirect(target, {"code": code.value})


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        auth = BasicAuth.decode(header, encoding="utf-8")
    except ValueError:
        return None
    return auth.login, auth.password


async def token(request: web.Request) -> web.Response:
    """The token endpoint: authorization_code, refresh_token and client_credentials."""
    state = request.app[STATE]
    form = await request.post()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    try:
        body = oauth.token(
            state,
            request.match_info["tenant"],
            fields,
            basic=_basic_credentials(request),
            issuer=origin(request),
        )
    except IdentityError as exc:
        return error_response(request, exc)
    return web.json_response(body, headers=_NO_STORE)


def add_routes(app: web.Application) -> None:
    """Register the identity endpoints on ``app``."""
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", jwks)
    app.router.add_get("/{tenant}/discovery/instance", instance_discovery)
    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", authorize_page)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize", authorize_submit)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
