"""The sandbox's admin API under ``/sandbox/``, answered to loopback peers only.

- ``POST /sandbox/users`` ``{email, password, displayName?, shared?, folderNames?}``
  -> 201 ``{email, id, displayName, shared}``; ``folderNames`` localizes the well-known
  folders (``{"inbox": "Posteingang", "sentitems": "Gesendete Elemente", ...}``)
- ``POST /sandbox/grants`` ``{user, mailbox, sendAs?, sendOnBehalf?}``
  -> 201 ``{user, mailbox, fullAccess, sendAs, sendOnBehalf}``
- ``DELETE /sandbox/grants`` ``{user, mailbox}`` -> 204
- ``POST /sandbox/apps`` ``{clientId, clientSecret, redirectUris[], tenant?, displayName?,
  applicationPermissions[]?}`` -> 201, the app without its secret
- ``POST /sandbox/users/{email}/revoke[?accessTokens=true]``
  -> 200 ``{user, refreshTokensRevoked, accessTokensRevoked}``
- ``POST /sandbox/tokens/revoke`` ``{token}`` -> 200 ``{user, resource, revoked: true}``: that
  one access token is refused from now on (introspection and the grants snapshot drop it),
  while the refresh tokens of its user keep working
- ``POST /sandbox/clock`` ``{advanceSeconds}`` -> 200 ``{now, offsetSeconds}``
- ``POST /sandbox/introspect`` ``{token}`` (or ``GET ?token=``) -> 200, see
  ``SandboxState.introspect``
- ``GET /sandbox/tenant`` -> 200 ``{tenantId, domains, users, apps, grants}``
- mailboxes, messages, subscriptions and notification statistics: see
  :mod:`relay.sandbox.graph.admin`

A shared mailbox is a user with ``shared: true`` and no password. Bad input gets a 400
(404 for an unknown user or mailbox, 409 for a duplicate) in the relay's error shape with
``field`` naming the offending input, and changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from relay.errors import InputError
from relay.sandbox.errors import IdentityError
from relay.sandbox.graph import admin as graph_admin
from relay.sandbox.inputs import flag, json_body, required_text, text, texts
from relay.sandbox.keys import STATE
from relay.sandbox.scopes import full_scope, parse_application_permission
from relay.sandbox.state import Grant, SandboxClock, SandboxState

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
    body = await json_body(request)
    shared = flag(body, "shared")
    folder_names = body.get("folderNames") or {}
    if not isinstance(folder_names, dict) or not all(
        isinstance(v, str) for v in folder_names.values()
    ):
        raise InputError(
            "folderNames: must map well-known folder names to display names", field="folderNames"
        )
    user = state.add_user(
        required_text(body, "email"),
        password=text(body, "password", required=not shared),
        display_name=text(body, "displayName", required=False),
        shared=shared,
        folder_names=folder_names,
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
    """Let a user open another mailbox, optionally with Send As or Send on Behalf."""
    state = request.app[STATE]
    body = await json_body(request)
    grant = state.set_grant(
        required_text(body, "user"),
        required_text(body, "mailbox"),
        send_as=flag(body, "sendAs"),
        send_on_behalf=flag(body, "sendOnBehalf"),
    )
    return web.json_response(_grant_view(grant), status=201)


def _grant_view(grant: Grant) -> dict[str, Any]:
    return {
        "user": grant.user,
        "mailbox": grant.mailbox,
        "fullAccess": True,
        "sendAs": grant.send_as,
        "sendOnBehalf": grant.send_on_behalf,
    }


async def remove_grant(request: web.Request) -> web.Response:
    """Take a grant away."""
    state = request.app[STATE]
    body = await json_body(request)
    state.remove_grant(required_text(body, "user"), required_text(body, "mailbox"))
    return web.Response(status=204)


async def add_app(request: web.Request) -> web.Response:
    """Register a confidential client."""
    state = request.app[STATE]
    body = await json_body(request)
    client_id = required_text(body, "clientId")
    secret = required_text(body, "clientSecret")
    redirect_uris = texts(body, "redirectUris", required=True)
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    tenant = text(body, "tenant", required=False)
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
    for raw in texts(body, "applicationPermissions", required=False):
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
        display_name=text(body, "displayName", required=False),
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


async def revoke_token(request: web.Request) -> web.Response:
    """Revoke one access token early; its user's refresh tokens keep working."""
    state = request.app[STATE]
    token = state.revoke_access_token(required_text(await json_body(request), "token"))
    return web.json_response({"user": token.user, "resource": token.resource, "revoked": True})


async def advance_clock(request: web.Request) -> web.Response:
    """Move the sandbox clock forward, to test expiry without waiting."""
    state = request.app[STATE]
    body = await json_body(request)
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
        value = required_text(await json_body(request), "token")
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
            "grants": [_grant_view(g) for g in state.grants.values()],
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
    app.router.add_post("/tokens/revoke", revoke_token)
    app.router.add_post("/clock", advance_clock)
    app.router.add_post("/introspect", introspect)
    app.router.add_get("/introspect", introspect)
    app.router.add_get("/tenant", tenant)
    graph_admin.add_routes(app)
    return app
