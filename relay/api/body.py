"""Reading request bodies: a size limit while reading, strict UTF-8 and strict JSON.

Every problem is an :class:`~relay.errors.InputError` naming ``body`` (or the header at
fault), raised before a handler has looked at anything, so a refused body changes nothing.
The limit of a request is set by :func:`relay.api.limits.limits_middleware` (``BODY_LIMIT``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.errors import InputError

# The default of server.max_body_bytes: what a request gets when no middleware set one.
DEFAULT_LIMIT = 1024 * 1024
BODY_LIMIT = web.RequestKey("body_limit", int)
# A body handed over already parsed, by an in-process call of an endpoint
# (relay.api.dispatch): read_json answers it instead of reading the request's own body.
PRESET_BODY = web.RequestKey("preset_body", dict)
# Deeper nesting is refused: no payload of the API needs more than a few levels, and deep
# values would exhaust the recursion of the JSON encoder, pydantic and the store.
MAX_DEPTH = 64
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_BOM = b"\xef\xbb\xbf"


class PayloadTooLarge(InputError):
    """The request body is larger than the route accepts (413)."""

    status = 413
    reason = "Payload Too Large"
    code = "PayloadTooLarge"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than the limit of {limit} bytes", field="body")
        self.limit = limit


class UnsupportedMediaType(InputError):
    """The body is not of the type the route reads (415)."""

    status = 415
    reason = "Unsupported Media Type"
    code = "UnsupportedMediaType"


def is_json(content_type: str) -> bool:
    """Whether a media type (without parameters) is JSON."""
    kind = content_type.strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def check_json_type(request: web.Request) -> None:
    """A body sent with a Content-Type must be JSON in UTF-8 (415 naming the header). A body
    without one is read as JSON, as EmailEngine does."""
    if "Content-Type" not in request.headers:
        return
    if not is_json(request.content_type):
        raise UnsupportedMediaType(
            f"Content-Type {request.content_type!r} is not supported: send the body as "
            "application/json",
            field="Content-Type",
        )
    charset = request.charset
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMediaType(
            f"Content-Type charset {charset!r} is not supported: JSON is sent as utf-8",
            field="Content-Type",
        )


async def read_bytes(request: web.Request, limit: int | None = None) -> bytes:
    """The whole body, refused (413) as soon as it exceeds ``limit`` (default: the request's
    ``BODY_LIMIT``), whatever Content-Length claims."""
    if limit is None:
        limit = request.get(BODY_LIMIT, DEFAULT_LIMIT)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
    except HttpProcessingError as exc:
        # A chunked body that is malformed or ends too early.
        raise InputError(f"Request body is incomplete: {exc.message}", field="body") from None
    except ConnectionError:
        # The client went away before sending what it announced; nobody reads the answer,
        # but the request ends as refused input, not as a failure of ours.
        raise InputError(
            "Request body is incomplete: the connection closed", field="body"
        ) from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON: UTF-8 (a BOM is ignored), no NaN or Infinity, no lone surrogates, at
    most ``MAX_DEPTH`` levels deep."""
    try:
        text = raw.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Request body is not valid UTF-8 (byte {exc.start})", field="body"
        ) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"Request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            field="body",
        ) from None
    except ValueError as exc:
        raise InputError(f"Request body is not valid JSON: {exc}", field="body") from None
    except RecursionError:
        raise _too_deep() from None
    _check_values(value)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep() -> InputError:
    return InputError(f"Request body is nested more than {MAX_DEPTH} levels deep", field="body")


def _check_values(value: Any) -> None:
    """Depth and strings, without recursion (the value may be as deep as the parser went)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InputError(
                    "Request body has a string with a lone surrogate (\\ud800-\\udfff)",
                    field="body",
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)


async def read_json(request: web.Request, default: Any = None) -> Any:
    """The JSON body of ``request`` (``default`` when there is none), checked as above."""
    preset = request.get(PRESET_BODY)
    if preset is not None:
        return preset
    if not request.body_exists:
        return default
    check_json_type(request)
    raw = await read_bytes(request)
    if not raw:
        return default
    return parse_json(raw)
