"""Error mapping and API-token authentication, each one middleware."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from relay.api.endpoint import Handler
from relay.api.keys import AUTH_CACHE, STORE
from relay.auth.api_tokens import hash_token
from relay.errors import InputError, StoreError, Unauthorized, Unavailable
from relay.store import tokens

log = structlog.get_logger(__name__)


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
    # EmailEngine also accepts the token as a query argument.
    return request.query.get("access_token") or None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything under ``/v1`` needs a known API token."""
    if not request.path.startswith("/v1/") and request.path != "/v1":
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise Unauthorized("Missing API token: send Authorization: Bearer <token>")
    digest = hash_token(token)
    cache = request.app[AUTH_CACHE]
    if digest not in cache:
        async with request.app[STORE].read() as conn:
            if not await tokens.exists(conn, token):
                raise Unauthorized("Invalid API token")
        cache.add(digest)
    return await handler(request)
