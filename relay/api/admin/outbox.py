"""The outbox: queued, sending, sent and failed messages with their last error, paged and
filtered by state on the server; cancel one (``DELETE /v1/outbox/{queueId}``) or queue a
failed one again (``POST /v1/outbox/{queueId}/retry``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.api.admin.pages import PREFIX, api, page, read_form, render
from relay.api.admin.session import Session
from relay.api.dispatch import prepare
from relay.store.schema import OutboxStatus

__all__ = ["PAGE_SIZE", "ROUTES"]

PAGE_SIZE = 50


def _v1(queue_id: str, suffix: str = "") -> str:
    return f"/v1/outbox/{quote(queue_id, safe='')}{suffix}"


def _int(value: str | None, default: int) -> int:
    return int(value) if value and value.isdigit() else default


@page
async def outbox_list(request: web.Request, session: Session) -> web.StreamResponse:
    number = _int(request.query.get("page"), 1)
    status = request.query.get("status", "")
    if status not in OutboxStatus.ALL:
        status = ""
    args: dict[str, Any] = {"page": max(0, number - 1), "pageSize": PAGE_SIZE}
    if status:
        args["status"] = status
    listing = await api(request, session, "GET", f"/v1/outbox?{urlencode(args)}")
    keep = {"status": status} if status else {}

    def link(n: int) -> str:
        return f"{PREFIX}/outbox?{urlencode({**keep, 'page': n})}"

    return render(
        request,
        session,
        "outbox.html",
        {
            "listing": listing,
            "number": number,
            "status": status,
            "statuses": OutboxStatus.ALL,
            "done": request.query.get("done", ""),
            "prev": link(number - 1) if number > 1 else None,
            "next": link(number + 1) if number < listing["pages"] else None,
        },
    )


def _action(method: str, suffix: str, done: str) -> Any:
    @page
    async def act(request: web.Request, session: Session) -> web.StreamResponse:
        queue_id = request.match_info["queueId"]
        call = prepare(request, method, _v1(queue_id, suffix))
        form = await read_form(request, session)
        await call.run(session.grant)
        back = {"done": f"{queue_id}: {done}"}
        status = form.get("status", "")
        if status in OutboxStatus.ALL:
            back["status"] = status
        raise web.HTTPSeeOther(f"{PREFIX}/outbox?{urlencode(back)}")

    return act


ROUTES = [
    ("GET", "/outbox", outbox_list),
    ("POST", "/outbox/{queueId}/cancel", _action("DELETE", "", "cancelled")),
    ("POST", "/outbox/{queueId}/retry", _action("POST", "/retry", "queued again")),
]
