"""``/health``, ``/metrics``: liveness/readiness and Prometheus."""

from __future__ import annotations

import contextlib
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from relay import __version__
from relay.api import cluster
from relay.api.endpoint import Endpoint, Handler, json_response
from relay.api.keys import METRICS, STORE
from relay.api.models import Out
from relay.errors import StoreError
from relay.store import deliveries as queue
from relay.store.schema import AccountState, DeliveryStatus, accounts

TAG = "Service"


class Health(Out):
    status: str
    version: str
    store: str


async def health(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreError:
        return json_response(
            Health(status="error", version=__version__, store="unavailable"), status=503
        )
    return json_response(Health(status="ok", version=__version__, store="ok"))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; account states and queue depth are read from the store at scrape time."""
    registry = request.app[METRICS]
    try:
        async with request.app[STORE].read() as conn:
            rows = await conn.execute(
                select(accounts.c.state, func.count()).group_by(accounts.c.state)
            )
            counts = {str(state): int(n) for state, n in rows.all()}
            depth = await queue.depth(conn)
    except StoreError:
        counts, depth = {}, {}
    for state in AccountState.ALL:
        registry.accounts.labels(state=state).set(counts.get(state, 0))
    for status in DeliveryStatus.ALL:
        registry.webhook_queue.labels(status=status).set(depth.get(status, 0))
    with contextlib.suppress(StoreError):
        cluster.record(registry, await cluster.read_nodes(request.app))
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time requests by route template (raw paths would explode the labels)."""
    started = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        m = request.app[METRICS]
        m.http_requests.labels(method=request.method, route=route, status=str(status)).inc()
        m.http_latency.labels(route=route).observe(time.perf_counter() - started)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/health",
        health,
        "Liveness and readiness (checks the store)",
        TAG,
        response=Health,
        public=True,
        errors={503: "The store is unavailable"},
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (a token with the metrics scope, unless security.metrics_public)",
        TAG,
        errors={403: "The token lacks the metrics scope"},
        content_type="text/plain",
    ),
]
