"""The sandbox's admin API under ``/sandbox/``, answered to loopback peers only.

- ``POST /sandbox/users`` ``{email, password, displayName?, shared?}``
  -> 201 ``{email, id, displayName, shared}``
- ``POST /sandbox/grants`` ``{user, mailbox, sendAs?}``
  -> 201 ``{user, mailbox, fullAccess, sendAs}``
- ``DELETE /sandbox/grants`` ``{user, mailbox}`` -> 204
- ``POST /sandbox/apps`` ``{clientId, clientSecret, redirectUris[], tenant?, displayName?,
  applicationPermissions[]?}`` -> 201, the app without its secret
- ``POST /sandbox/users/{email}/revoke[?accessTokens=true]``
  -> 200 ``{user, refreshTokensRevoked, accessTokensRevoked}``
- ``POST /sandbox/clock`` ``{advanceSeconds}`` -> 200 ``{now, offsetSeconds}``
- ``POST /sandbox/introspect`` ``{token}`` (or ``GET ?token=``) -> 200, see
  ``SandboxState.introspect``
- ``GET /sandbox/tenant`` -> 200 ``{tenantId, domains, users, apps, grants}``

A shared mailbox is a user with ``shared: true`` and no password. Bad input gets a 400
(404 for an unknown user or mailbox, 409 for a duplicate) in the relay's error shape with
``field`` naming the offending input, and changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from relay.errors import InputError
from relay.sandbox.errors import IdentityError
from relay.sandbox.keys import STATE
from relay.sandbox.scopes import full_scope, parse_application_permission
from relay.sandbox.state import SandboxClock, SandboxState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _error(status: int, reason: str, message: str, code: str, **extra: Any) -> web.Response:
    body = {"statusCode": status, "error": reason, "message": message, "code": code, **extra}
    return web.json_response(body, status=status)


def is_loopback(remote: str | None) -> bool:
    """Whether a peer address is on this machine's loopback interface."""
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse the admin API to any peer that is not on the loopback interface."""
    if not is_loopback(request.remote):
        return _error(
            403, "Forbidden", "The sandbox admin API answers loopback clients only", "Forbidden"
        )
    return await handler(request)


@web.middleware
async def input_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map input errors (and aiohttp's own 404/405) to the relay's JSON error shape."""
    try:
        return await handler(request)
    except InputError as exc:
        extra = {"field": exc.field} if exc.field else {}
        return _error(exc.status, exc.reason, exc.message, exc.code, **extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason, exc.reason, exc.reason.replace(" ", ""))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("body: must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise InputError("body: must be a JSON object", field="body")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InputError(f"{name}: required", field=name)
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(f"{name}: must be a non-empty string", field=name)
    return value


def _required_text(body: dict[str, Any], name: str) -> str:
    value = _text(body, name)
    assert value is not None
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InputError(f"{name}: must be true or false", field=name)
    return value


def _texts(body: dict[str, Any], name: str, *, required: bool) -> list[str]:
    value = body.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{name}: must be a list of non-empty strings", field=name)
    if required and not value:
        raise InputError(f"{name}: needs at least one entry", field=name)
    return value


def _check_redirect_uri(uri: str) -> None:
    parts = urlsplit(uri)
    local = (parts.hostname or "") in _LOOPBACK_HOSTS
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise InputError(
            f"redirectUris: {uri!r} must be an absolute http(s) URL without a fragment",
            field="redirectUris",
        )
    if parts.scheme == "http" and not local:
        # Microsoft accepts plain http only for localhost addresses.
        raise InputError(
            f"redirectUris: {uri!r} must use https (http is allowed for localhost only)",
            field="redirectUris",
        )


async def add_user(request: web.Request) -> web.Response:
    """Create a user or, with ``shared: true``, a shared mailbox."""
    state = request.app[STATE]
    body = await _body(request)
    shared = _flag(body, "shared")
    user = state.add_user(
        _required_text(body, "email"),
        password=_text(body, "password", required=not shared),
        display_name=_text(body, "displayName", required=False),
        shared=shared,
    )
    return web.json_response(
        {
            "email": user.email,
            "id": user.object_id,
            "displayName": user.display_name,
            "shared": user.shared,
        },
        status=201,
    )


async def add_grant(request: web.Request) -> web.Response:
    """Let a user open another mailbox, optionally with Send As."""
    state = request.app[STATE]
    body = await _body(request)
    grant = state.set_grant(
        _required_text(body, "user"), _required_text(body, "mailbox"), send_as=_flag(body, "sendAs")
    )
    return web.json_response(
        {"user": grant.user, "mailbox": grant.mailbox, "fullAccess": True, "sendAs": grant.send_as},
        status=201,
    )


async def remove_grant(request: web.Request) -> web.Response:
    """Take a grant away."""
    state = request.app[STATE]
    body = await _body(request)
    state.remove_grant(_required_text(body, "user"), _required_text(body, "mailbox"))
    return web.Response(status=204)


async def add_app(request: web.Request) -> web.Response:
    """Register a confidential client."""
    state = request.app[STATE]
    body = await _body(request)
    client_id = _required_text(body, "clientId")
    secret = _required_text(body, "clientSecret")
    redirect_uris = _texts(body, "redirectUris", required=True)
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    tenant = _text(body, "tenant", required=False)
    if tenant is not None:
        try:
            tenant_id = state.resolve_tenant(tenant)
        except IdentityError:
            tenant_id = None
        if tenant_id is None:
            raise InputError(
                f"tenant: {tenant!r} is not this sandbox's tenant ({state.tenant_id})",
                field="tenant",
            )
    permissions: dict[str, set[str]] = {}
    for raw in _texts(body, "applicationPermissions", required=False):
        try:
            resource, role = parse_application_permission(raw)
        except ValueError as exc:
            raise InputError(
                f"applicationPermissions: {exc}", field="applicationPermissions"
            ) from None
        permissions.setdefault(resource, set()).add(role)
    app = state.add_app(
        client_id,
        secret,
        redirect_uris,
        display_name=_text(body, "displayName", required=False),
        app_permissions={resource: frozenset(roles) for resource, roles in permissions.items()},
    )
    return web.json_response(_app_view(state, app.client_id), status=201)


def _app_view(state: SandboxState, client_id: str) -> dict[str, Any]:
    app = state.apps[client_id]
    return {
        "clientId": app.client_id,
        "displayName": app.display_name,
        "tenant": state.tenant_id,
        "redirectUris": list(app.redirect_uris),
        "applicationPermissions": sorted(
            full_scope(resource, role)
            for resource, roles in app.app_permissions.items()
            for role in roles
        ),
    }


async def revoke(request: web.Request) -> web.Response:
    """Invalidate a user's refresh tokens (and, with ``?accessTokens=true``, access tokens)."""
    state = request.app[STATE]
    flag = request.query.get("accessTokens", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise InputError("accessTokens: must be true or false", field="accessTokens")
    email = request.match_info["email"]
    refresh, access = state.revoke_user(email, access_tokens=flag in ("true", "1"))
    return web.json_response(
        {
            "user": state.user(email).email,
            "refreshTokensRevoked": refresh,
            "accessTokensRevoked": access,
        }
    )


async def advance_clock(request: web.Request) -> web.Response:
    """Move the sandbox clock forward, to test expiry without waiting."""
    state = request.app[STATE]
    body = await _body(request)
    seconds = body.get("advanceSeconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise InputError(
            "advanceSeconds: must be a positive number of seconds (time only moves forward)",
            field="advanceSeconds",
        )
    now = state.advance_clock(float(seconds))
    offset = state.clock.offset if isinstance(state.clock, SandboxClock) else 0.0
    return web.json_response({"now": now, "offsetSeconds": offset})


async def introspect(request: web.Request) -> web.Response:
    """What an access token grants: owner, resource, scopes, mailboxes, Send As."""
    state = request.app[STATE]
    if request.method == "GET":
        value = request.query.get("token", "")
        if not value:
            raise InputError("token: required", field="token")
    else:
        value = _required_text(await _body(request), "token")
    return web.json_response(state.introspect(value))


async def tenant(request: web.Request) -> web.Response:
    """Everything the tenant holds, without secrets or tokens."""
    state = request.app[STATE]
    return web.json_response(
        {
            "tenantId": state.tenant_id,
            "domains": sorted(state.domains),
            "users": [
                {
                    "email": u.email,
                    "id": u.object_id,
                    "displayName": u.display_name,
                    "shared": u.shared,
                    "mailboxes": state.mailboxes_of(u.email),
                    "sendAs": state.send_as_of(u.email),
                }
                for u in state.users.values()
            ],
            "apps": [_app_view(state, client_id) for client_id in state.apps],
            "grants": [
                {"user": g.user, "mailbox": g.mailbox, "fullAccess": True, "sendAs": g.send_as}
                for g in state.grants.values()
            ],
        }
    )


def create_admin_app(state: SandboxState) -> web.Application:
    """The admin API as a sub-application, mounted at ``/sandbox/``."""
    app = web.Application(middlewares=[loopback_only, input_errors])
    app[STATE] = state
    app.router.add_post("/users", add_user)
    app.router.add_post("/users/{email}/revoke", revoke)
    app.router.add_post("/grants", add_grant)
    app.router.add_delete("/grants", remove_grant)
    app.router.add_post("/apps", add_app)
    app.router.add_post("/clock", advance_clock)
    app.router.add_post("/introspect", introspect)
    app.router.add_get("/introspect", introspect)
    app.router.add_get("/tenant", tenant)
    return app
