"""The dashboard: accounts by state, activity over the last hour, queues, failing routes and
the nodes."""

from __future__ import annotations

from aiohttp import web

from relay.api.admin.chart import chart, series
from relay.api.admin.pages import api, page, render
from relay.api.admin.session import Session
from relay.api.keys import STORE
from relay.events.model import iso_ms
from relay.store import overview
from relay.store.engine import now_ms
from relay.store.schema import AccountState

__all__ = ["dashboard"]

HOUR_MINUTES = 60


@page
async def dashboard(request: web.Request, session: Session) -> web.StreamResponse:
    now = now_ms()
    last_minute = now // overview.MINUTE_MS
    since = (last_minute - HOUR_MINUTES + 1) * overview.MINUTE_MS
    async with request.app[STORE].read() as conn:
        states = await overview.accounts_by_state(conn)
        made, delivered = await overview.per_minute(conn, since)
        queues = await overview.queue_depths(conn)
        failing = await overview.failing_routes(conn)
    cluster = await api(request, session, "GET", "/v1/cluster")
    activity = chart(
        {
            "events": series(made, last_minute, HOUR_MINUTES),
            "deliveries": series(delivered, last_minute, HOUR_MINUTES),
        }
    )
    return render(
        request,
        session,
        "dashboard.html",
        {
            "states": [(s, states.get(s, 0)) for s in AccountState.ALL],
            "accounts_total": sum(states.values()),
            "chart": activity,
            "queues": queues,
            "failing": [
                {
                    "route": r,
                    "since": iso_ms(r.failing_since_ms) if r.failing_since_ms else None,
                }
                for r in failing
            ],
            "cluster": cluster,
        },
    )
