"""Every endpoint, registered on the application and described in ``/openapi.json``."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from relay.api import (
    accounts,
    authentication,
    cluster,
    events,
    graph,
    health,
    limits,
    messages,
    oauth2_apps,
    openapi,
    outbox,
    settings,
    tokens,
    webhooks,
)
from relay.api.endpoint import Endpoint
from relay.api.keys import ROUTES


def endpoints() -> list[Endpoint]:
    return [
        *accounts.ENDPOINTS,
        *messages.ENDPOINTS,
        *oauth2_apps.ENDPOINTS,
        *authentication.ENDPOINTS,
        *webhooks.ENDPOINTS,
        *events.ENDPOINTS,
        *tokens.ENDPOINTS,
        *outbox.ENDPOINTS,
        *settings.ENDPOINTS,
        *health.ENDPOINTS,
        *cluster.ENDPOINTS,
        *graph.ENDPOINTS,
        openapi.ENDPOINT,
    ]


@functools.cache
def _document() -> dict[str, Any]:
    """The OpenAPI document, built once per process: the route table is fixed, and building
    it (pydantic's JSON schemas of every model) takes longer than the rest of a start-up."""
    return openapi.build_document(endpoints())


def setup_routes(app: web.Application) -> None:
    table = endpoints()
    for ep in table:
        app.router.add_route(ep.method, ep.path, ep.handler, expect_handler=limits.expect_handler)
    app[ROUTES] = {(ep.method, ep.path): ep for ep in table}
    app[openapi.OPENAPI] = _document()
    graph.setup(app)
    outbox.setup(app)
    events.setup(app)
