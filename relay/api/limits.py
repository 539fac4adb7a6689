"""Limits on what a request may bring, checked before authentication and before any handler.

Two layers:

- aiohttp's HTTP parser refuses what is grossly too large (a request line over
  ``PARSER_LIMITS["max_line_size"]``, a header over ``max_field_size``, more than
  ``max_headers`` headers, a body smaller than its Content-Length) with its own plain-text
  400 and closes the connection; nothing of such a request reaches the application.
- :func:`limits_middleware` refuses, in the JSON error shape, a URL over ``MAX_URL`` (414), a
  header over ``MAX_HEADER`` bytes, more than ``MAX_HEADERS`` headers or more than
  ``MAX_HEADER_BYTES`` of them (431, naming the header), a Content-Length over the route's
  body limit (413) and a body that is not JSON on a JSON route (415, naming Content-Type).
  Bodies that only turn out too large while they are read (chunked, or a Content-Length
  that lies) are refused by :func:`relay.api.body.read_bytes`.

The body limit is ``server.max_body_bytes``; routes that carry a message (submit, upload)
add ``send.max_message_bytes`` as base64, which is how a message travels in JSON.
"""

from __future__ import annotations

from typing import Any

from aiohttp import HttpVersion11, web

from relay.api.body import BODY_LIMIT, PayloadTooLarge, check_json_type
from relay.api.endpoint import Endpoint, Handler
from relay.api.keys import ROUTES, SETTINGS
from relay.config import Settings
from relay.errors import InputError

MAX_URL = 8192
MAX_HEADER = 8192
MAX_HEADERS = 100
MAX_HEADER_BYTES = 32768
# aiohttp's parser, the backstop behind the limits above (its defaults, made explicit; the
# headers it may hold, max_headers x max_field_size, bound the memory of one request).
PARSER_LIMITS: dict[str, Any] = {
    "max_line_size": 16384,
    "max_field_size": 16384,
    "max_headers": 128,
}


class URITooLong(InputError):
    status = 414
    reason = "URI Too Long"
    code = "URITooLong"


class HeadersTooLarge(InputError):
    status = 431
    reason = "Request Header Fields Too Large"
    code = "RequestHeaderFieldsTooLarge"


def body_limit(settings: Settings, endpoint: Endpoint | None) -> int:
    """The largest body, in bytes, the route of ``endpoint`` accepts."""
    limit = settings.server.max_body_bytes
    if endpoint is not None and endpoint.carries_message:
        limit += -(-settings.send.max_message_bytes // 3) * 4
    return limit


def _endpoint(request: web.Request) -> Endpoint | None:
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return request.app[ROUTES].get((method, resource.canonical))


def _check_head(request: web.Request) -> None:
    if len(request.raw_path) > MAX_URL:
        raise URITooLong(
            f"The URL is {len(request.raw_path)} bytes long; at most {MAX_URL} are accepted",
            field="url",
        )
    headers = request.raw_headers
    if len(headers) > MAX_HEADERS:
        raise HeadersTooLarge(
            f"The request has {len(headers)} header fields; at most {MAX_HEADERS} are accepted",
            field="headers",
        )
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > MAX_HEADER:
            field = name.decode("latin-1")
            raise HeadersTooLarge(
                f"Header {field} is {size} bytes long; at most {MAX_HEADER} are accepted",
                field=field,
            )
        total += size
    if total > MAX_HEADER_BYTES:
        raise HeadersTooLarge(
            f"The header fields are {total} bytes long; at most {MAX_HEADER_BYTES} are accepted",
            field="headers",
        )


def _check(request: web.Request) -> int:
    """Refuse what the request brings beyond the limits; return its body limit."""
    _check_head(request)
    endpoint = _endpoint(request)
    limit = body_limit(request.app[SETTINGS], endpoint)
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(limit)
    if endpoint is not None and endpoint.body is not None and request.body_exists:
        check_json_type(request)
    return limit


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the limits of the module docstring; handlers read the body limit from
    ``request[BODY_LIMIT]``."""
    request[BODY_LIMIT] = _check(request)
    return await handler(request)


async def expect_handler(request: web.Request) -> None:
    """``Expect: 100-continue``: invite the body only if the request passes the checks;
    otherwise send nothing, and the middleware answers without reading the body."""
    try:
        _check(request)
    except InputError:
        return
    # As aiohttp's own expect handler does.
    if request.version != HttpVersion11:
        return
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # The 100 is not the response: aiohttp must still send the real one.
    request.writer.output_size = 0
