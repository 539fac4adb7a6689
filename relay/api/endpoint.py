"""The route table entry shared by routing and the OpenAPI document.

Each resource module lists its :class:`Endpoint` values; ``relay.api.routes`` registers them
and ``relay.api.openapi`` describes them, so a route cannot exist undocumented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from relay.api.body import read_json
from relay.auth.grants import Permission
from relay.errors import InputError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    # Extra documented responses: status -> description.
    errors: Mapping[int, str] = field(default_factory=dict)
    public: bool = False
    # Non-JSON success responses (text/plain, redirects) describe themselves here; "" is a
    # success without a body.
    content_type: str = "application/json"
    # The schema of a non-JSON success body (default: a string); for text/event-stream,
    # the schema of one event.
    body_schema: Mapping[str, Any] | None = None
    # Other success responses: status -> (description, content type), a string each.
    alternatives: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    # What a token needs to use the route (every non-public /v1 route declares one; see
    # relay.api.middleware). None on public routes.
    permission: Permission | None = None
    # The body carries a whole message (submit, upload): it may be larger (relay.api.limits).
    carries_message: bool = False


def json_response(model: BaseModel | Mapping[str, Any], *, status: int = 200) -> web.Response:
    """Serialize a response model (by alias, without unset optional fields) to JSON."""
    if isinstance(model, BaseModel):
        body = model.model_dump_json(by_alias=True, exclude_none=True)
        return web.Response(body=body, status=status, content_type="application/json")
    return web.json_response(dict(model), status=status)


async def read_object(request: web.Request) -> dict[str, Any]:
    """The JSON object of the body (``{}`` without one); see :func:`relay.api.body.read_json`."""
    raw = await read_json(request, {})
    if not isinstance(raw, dict):
        raise InputError(f"Request body must be a JSON object, not {_json_kind(raw)}", field="body")
    return raw


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse the JSON body into ``model``; a problem becomes an InputError naming the field."""
    return validate(model, await read_object(request))


def read_query(request: web.Request, model: type[M]) -> M:
    """Parse the query string into ``model``."""
    return validate(model, dict(request.query))


def validate(model: type[M], raw: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise input_error_from(exc) from None


def input_error_from(exc: ValidationError) -> InputError:
    """The first validation problem, phrased for a person, with its dotted field path."""
    first = exc.errors(include_url=False)[0]
    path = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "is not allowed"
    elif first["type"] == "missing":
        message = "is required"
    message = message.removeprefix("Value error, ")
    return InputError(f"{path}: {message}" if path else message, field=path or None)
