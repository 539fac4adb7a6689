"""Error mapping and API-token authentication, each one middleware.

Authorisation happens here, in one place, from the route table (``Endpoint.permission``):

- a token is read from ``Authorization: Bearer`` (or ``?access_token=``), looked up by its
  hash and its grant kept for a second (:class:`relay.auth.grant_cache.GrantCache`; the node
  that deletes a token drops it at once); an unknown or expired token gets 401;
- every ``/v1`` route needs the ``api`` scope and the route's permission (403 naming it);
- a token bound to an account may use a route with ``{account}`` in its path only for that
  account (and, with ``shared``, the shared mailboxes delegated from it): any other id gets
  the 404 of a missing account, so nothing is revealed. A route without ``{account}`` shows
  or changes what belongs to every account (webhook routes and their deliveries, settings,
  OAuth2 apps, new accounts), so it is refused to a bound token (403) unless its
  ``permissions`` name that route's group explicitly; the lists such a token may read
  (``GET /v1/accounts``, ``GET /v1/outbox``, a queued message) hold its accounts only;
- then :func:`relay.api.guard.admit` applies the token's restrictions, the handler runs with
  ``request[GRANT]`` set, and writes, sends and deletes go to :func:`relay.api.guard.audit`
  with the status answered;
- ``GET /metrics`` needs a token with the ``metrics`` scope unless
  ``security.metrics_public``.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web

from relay.api import guard
from relay.api.endpoint import Endpoint, Handler
from relay.api.keys import AUTH_CACHE, GRANT, ROUTES, SETTINGS, STORE
from relay.auth.api_tokens import hash_token
from relay.auth.grants import Grant, Permission
from relay.errors import (
    Forbidden,
    InputError,
    NotFound,
    StoreError,
    StoreUnavailable,
    Unauthorized,
    Unavailable,
)
from relay.store import accounts as accounts_store
from relay.store import tokens
from relay.store.engine import now_ms

log = structlog.get_logger(__name__)

# Seconds a client is asked to wait while the database is unavailable (a restart's length).
_STORE_RETRY_AFTER = "5"


def error_body(status: int, reason: str, message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"statusCode": status, "error": reason, "message": message, "code": code, **extra}


def error_response(status: int, reason: str, message: str, code: str, **extra: Any) -> web.Response:
    return web.json_response(error_body(status, reason, message, code, **extra), status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the error tree (and aiohttp's own HTTP errors) to the JSON error shape."""
    try:
        return await handler(request)
    except InputError as exc:
        extra = {"field": exc.field} if exc.field else {}
        return error_response(exc.status, exc.reason, exc.message, exc.code, **extra)
    except Unauthorized as exc:
        return error_response(401, "Unauthorized", str(exc), "Unauthorized")
    except Unavailable as exc:
        return error_response(exc.status, exc.reason, exc.message, exc.code)
    except StoreUnavailable as exc:
        # The store logs the outage once; a stack trace per request would only bury it.
        log.debug("store unavailable", path=request.path, error=str(exc))
        response = error_response(
            503, "Service Unavailable", "The store is unavailable; try again", "StoreError"
        )
        response.headers["Retry-After"] = _STORE_RETRY_AFTER
        return response
    except StoreError:
        log.exception("store failure", path=request.path)
        return error_response(503, "Service Unavailable", "The store is unavailable", "StoreError")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "NotFound" if exc.status == 404 else exc.reason.replace(" ", "")
        message = {
            404: "Requested page not found",
            405: f"Method {request.method} is not allowed on {request.path}",
            # aiohttp's own body limit (a form read by request.post()) names it in its text.
            413: exc.text or exc.reason,
        }.get(exc.status, exc.reason)
        response = error_response(exc.status, exc.reason, message, code)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(
            500, "Internal Server Error", "An internal error occurred", "InternalError"
        )


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # EmailEngine also accepts the token as a query argument (security.query_token).
    query = request.query.get("access_token") or None
    if query is not None and not request.app[SETTINGS].security.query_token:
        raise Unauthorized(
            "API tokens are not accepted in the query string here: "
            "send Authorization: Bearer <token>"
        )
    return query


ACCOUNT_NOT_FOUND = "Account record was not found for requested ID"
_AUDITED = frozenset({"write", "send", "destructive"})


def request_grant(request: web.Request) -> Grant | None:
    """The grant of the token that authenticated ``request`` (None on public routes)."""
    return request.get(GRANT)


async def _grant(request: web.Request) -> Grant:
    """The grant of the request's token; Unauthorized for a missing, unknown or expired one."""
    token = _bearer(request)
    if token is None:
        raise Unauthorized("Missing API token: send Authorization: Bearer <token>")
    digest = hash_token(token)
    cache = request.app[AUTH_CACHE]
    grant = cache.get(digest, time.monotonic())
    if grant is None:
        async with request.app[STORE].read() as conn:
            grant = await tokens.find(conn, digest)
        if grant is None:
            raise Unauthorized("Invalid API token")
        cache.put(digest, grant, time.monotonic())
    if grant.expired(now_ms()):
        cache.drop(digest)
        raise Unauthorized("The API token has expired")
    return grant


async def _sees(request: web.Request, grant: Grant, account: str) -> bool:
    """Whether the account-bound ``grant`` may use ``account`` (an unknown one: no)."""
    if account == grant.account:
        return True
    if not grant.shared:
        return False
    async with request.app[STORE].read() as conn:
        delegated = await accounts_store.delegated_to(conn, account)
    return grant.sees(account, delegated)


async def check_account(request: web.Request, account: str | None) -> None:
    """For routes that name an account in their body (adding one, a consent link): an
    account-bound token may name only an account it sees (403 otherwise, alike for
    existing and unknown ids)."""
    grant = request_grant(request)
    if grant is None or grant.account is None:
        return
    if account is None or not await _sees(request, grant, account):
        raise Forbidden(
            f"The token is bound to account {grant.account!r} and may not name another",
            field="account",
        )


def endpoint_of(request: web.Request) -> Endpoint | None:
    resource = request.match_info.route.resource
    if resource is None:
        return None
    routes = request.app[ROUTES]
    method = "GET" if request.method == "HEAD" else request.method
    return routes.get((method, resource.canonical))


async def _check(request: web.Request, grant: Grant, ep: Endpoint) -> Permission | None:
    """Refuse the request unless ``grant`` may use ``ep``; return the permission it used."""
    permission = ep.permission
    if permission is None:
        # A route that declares nothing (tests forbid it) is only for unrestricted tokens.
        if grant.permissions is None and grant.account is None and "api" in grant.scopes:
            return None
        raise Forbidden("The route declares no permission; only a full token may use it")
    if "api" not in grant.scopes:
        raise Forbidden("The token lacks the api scope", field="scopes")
    if not grant.allows(permission):
        raise Forbidden(f"The token lacks the {permission} permission", field="permissions")
    if grant.account is not None:
        account = request.match_info.get("account")
        if account is not None:
            if not await _sees(request, grant, account):
                # The same answer as for an account that does not exist: nothing is revealed.
                raise NotFound(ACCOUNT_NOT_FOUND, field="account")
        elif not grant.names_group(permission.group):
            raise Forbidden(
                f"The token is bound to an account; {permission} on a route without one "
                f"needs the {permission.group} group named in its permissions",
                field="permissions",
            )
    return permission


def _status_of(exc: Exception) -> int:
    """The status errors_middleware answers for ``exc``."""
    if isinstance(exc, InputError | Unavailable):
        return exc.status
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, web.HTTPException):
        return exc.status
    return 500


async def _metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.app[SETTINGS].security.metrics_public:
        return await handler(request)
    grant = await _grant(request)
    if "metrics" not in grant.scopes:
        raise Forbidden("The token lacks the metrics scope", field="scopes")
    await guard.admit(request, grant)
    request[GRANT] = grant
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything under ``/v1`` needs a known, unexpired API token whose grant allows the
    route (see the module docstring); ``/metrics`` needs the ``metrics`` scope."""
    if request.path == "/metrics":
        return await _metrics(request, handler)
    if not request.path.startswith("/v1/") and request.path != "/v1":
        return await handler(request)
    grant = await _grant(request)
    ep = endpoint_of(request)
    if ep is None:
        # Unknown path or method: the router's 404/405 (only to a known token).
        return await handler(request)
    return await run_endpoint(request, grant, ep, handler)


async def run_endpoint(
    request: web.Request, grant: Grant, ep: Endpoint, handler: Handler
) -> web.StreamResponse:
    """Run ``handler`` for ``ep`` as ``grant``'s token: its permission, its restrictions,
    and an audit line for a write, send or delete. The API's requests and the admin UI's
    in-process calls (relay.api.dispatch) both come through here."""
    permission = await _check(request, grant, ep)
    await guard.admit(request, grant)
    request[GRANT] = grant
    if permission is None or permission.action not in _AUDITED:
        return await handler(request)
    try:
        response = await handler(request)
    except Exception as exc:
        await guard.audit(request, grant, permission, _status_of(exc))
        raise
    await guard.audit(request, grant, permission, response.status)
    return response
