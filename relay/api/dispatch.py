"""Calling an API endpoint in-process, as a given token, with a body already parsed.

The admin UI acts through this: the same handler, validation, permission check, token
restrictions and audit line as the HTTP API (``relay.api.middleware.run_endpoint``), and the
same JSON answer, read back into Python values. Errors are raised, not answered: the caller
shows an :class:`~relay.errors.InputError` beside the field it names.

aiohttp copies a request only while its body is unread: a handler that reads a form and
then calls endpoints first keeps an unread copy with :func:`keep_unread`, which every call
is then made from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.payload import Payload
from yarl import URL

from relay.api.body import PRESET_BODY
from relay.api.middleware import endpoint_of, run_endpoint
from relay.auth.grants import Grant

__all__ = ["Call", "keep_unread", "prepare"]

# An unread copy of the incoming request (keep_unread) that calls are copied from.
_UNREAD = web.RequestKey("unread_copy", web.Request)

# Headers of the incoming request that the endpoint should not see: its body is not theirs.
_BODY_HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding", "Content-Encoding")


class Call:
    """One prepared call of an endpoint (``method`` on ``path``)."""

    def __init__(self, request: web.Request, method: str, path: str) -> None:
        headers = {k: v for k, v in request.headers.items() if k not in _BODY_HEADERS}
        request = request.get(_UNREAD, request)
        self._request = request.clone(method=method, rel_url=URL(path), headers=headers)
        self.method = method
        self.path = path

    async def run(self, grant: Grant, body: Mapping[str, Any] | None = None) -> Any:
        """Run the endpoint as ``grant``'s token with ``body``; its JSON answer as Python
        values (None for an empty one). Errors are raised as the API's error tree."""
        request = self._request
        match = await request.app.router.resolve(request)
        if match.http_exception is not None:
            raise match.http_exception
        match.add_app(request.app)
        match.freeze()
        # What aiohttp's own dispatch does with a resolved request (web_app._handle).
        request._match_info = match
        if body is not None:
            request[PRESET_BODY] = dict(body)
        ep = endpoint_of(request)
        if ep is None:
            raise web.HTTPNotFound()
        response = await run_endpoint(request, grant, ep, ep.handler)
        if not isinstance(response, web.Response) or not response.body:
            return None
        raw = response.body
        if isinstance(raw, bytes | bytearray):
            return json.loads(raw)
        if isinstance(raw, Payload):
            return json.loads(raw.decode())
        raise TypeError(f"{self.method} {self.path} answered a body that is not JSON")


def keep_unread(request: web.Request) -> None:
    """Keep a copy of ``request`` made before its body is read, for the calls made after."""
    if _UNREAD not in request:
        request[_UNREAD] = request.clone()


def prepare(request: web.Request, method: str, path: str) -> Call:
    """A call of ``method path`` made on behalf of ``request`` (its client address, headers
    and application)."""
    return Call(request, method, path)
