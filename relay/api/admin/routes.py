"""Webhook routes: the list, create and edit, secret rotation, a test delivery, the recent
deliveries of a route with a retry each, and recovery of failed ones in a time range.

A new or rotated ``whsec_`` secret is shown once, in the answer to the form that made it,
as the API shows it once; a stored secret (or a header value) is never shown.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.api.admin.forms import field_errors, route_payload
from relay.api.admin.pages import PREFIX, api, page, read_form, read_form_lists, render
from relay.api.admin.session import Session
from relay.api.dispatch import prepare
from relay.errors import InputError
from relay.events.model import EVENT_TYPES

__all__ = ["ROUTES"]

ROUTE_FIELDS = ("url", "description", "events", "accounts", "headers", "enabled")
DELIVERIES_SHOWN = 25
# How much of a receiver's answer the delivery list shows.
EXCERPT = 300


def _v1(route_id: str, suffix: str = "") -> str:
    return f"/v1/webhooks/{quote(route_id, safe='')}{suffix}"


def _page_url(route_id: str, suffix: str = "") -> str:
    return f"{PREFIX}/routes/{quote(route_id, safe='')}{suffix}"


@page
async def route_list(request: web.Request, session: Session) -> web.StreamResponse:
    listing = await api(request, session, "GET", "/v1/webhooks?pageSize=1000")
    return render(request, session, "routes.html", {"listing": listing})


def _excerpt(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


async def _route_page(
    request: web.Request, session: Session, route_id: str, **extra: Any
) -> web.Response:
    route = await api(request, session, "GET", _v1(route_id))
    status = request.query.get("status", "")
    args: dict[str, Any] = {"pageSize": DELIVERIES_SHOWN}
    if status in ("pending", "inflight", "delivered", "failed"):
        args["status"] = status
    listing = await api(request, session, "GET", _v1(route_id, f"/deliveries?{urlencode(args)}"))
    for delivery in listing["deliveries"]:
        last = delivery["attemptLog"][-1] if delivery["attemptLog"] else {}
        delivery["lastCode"] = last.get("statusCode")
        delivery["excerpt"] = _excerpt(last.get("responseBody") or last.get("error"))
    return render(
        request,
        session,
        "route.html",
        {"route": route, "deliveries": listing, "status": status, **extra},
    )


@page
async def route_detail(request: web.Request, session: Session) -> web.StreamResponse:
    return await _route_page(request, session, request.match_info["id"])


def _form_values(route: dict[str, Any] | None) -> dict[str, Any]:
    if route is None:
        return {"url": "", "description": "", "accounts": "", "enabled": "on", "events": []}
    return {
        "url": route["url"],
        "description": route["description"],
        "accounts": " ".join(route.get("accounts") or []),
        "enabled": "on" if route["enabled"] else "",
        "events": [] if route["events"] == ["*"] else route["events"],
        "header_names": sorted(route.get("headers") or {}),
    }


def _edit_page(
    request: web.Request,
    session: Session,
    form: dict[str, Any],
    errors: dict[str, str],
    route_id: str | None,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        session,
        "route_form.html",
        {
            "form": form,
            "errors": errors,
            "route_id": route_id,
            "event_types": EVENT_TYPES,
        },
        status=status,
    )


@page
async def new_route_form(request: web.Request, session: Session) -> web.StreamResponse:
    return _edit_page(request, session, _form_values(None), {}, None)


@page
async def edit_route_form(request: web.Request, session: Session) -> web.StreamResponse:
    route_id = request.match_info["id"]
    route = await api(request, session, "GET", _v1(route_id))
    return _edit_page(request, session, _form_values(route), {}, route_id)


async def _save(request: web.Request, session: Session, route_id: str | None) -> web.Response:
    call = (
        prepare(request, "POST", "/v1/webhooks")
        if route_id is None
        else prepare(request, "PUT", _v1(route_id))
    )
    form, lists = await read_form_lists(request, session)
    events = lists.get("events", [])
    try:
        payload = route_payload(form, events, editing=route_id is not None)
        result = await call.run(session.grant, payload)
    except InputError as exc:
        shown: dict[str, Any] = {**form, "events": events}
        return _edit_page(
            request, session, shown, field_errors(exc, ROUTE_FIELDS), route_id, status=exc.status
        )
    saved = route_id or result["id"]
    return await _route_page(request, session, saved, secret=result.get("secret"), done="saved")


@page
async def create_route(request: web.Request, session: Session) -> web.StreamResponse:
    return await _save(request, session, None)


@page
async def update_route(request: web.Request, session: Session) -> web.StreamResponse:
    return await _save(request, session, request.match_info["id"])


@page
async def rotate_secret(request: web.Request, session: Session) -> web.StreamResponse:
    route_id = request.match_info["id"]
    call = prepare(request, "PUT", _v1(route_id))
    await read_form(request, session)
    result = await call.run(session.grant, {"rotateSecret": True})
    return await _route_page(
        request, session, route_id, secret=result.get("secret"), done="secret rotated"
    )


@page
async def send_test(request: web.Request, session: Session) -> web.StreamResponse:
    route_id = request.match_info["id"]
    call = prepare(request, "POST", _v1(route_id, "/test"))
    await read_form(request, session)
    result = await call.run(session.grant)
    return await _route_page(request, session, route_id, test=result)


def _utc(value: str) -> str:
    """A ``datetime-local`` value (no zone) as UTC, which the form says it is."""
    value = value.strip()
    if len(value) == 16:
        return value + ":00Z"
    if len(value) == 19:
        return value + "Z"
    return value


@page
async def recover(request: web.Request, session: Session) -> web.StreamResponse:
    route_id = request.match_info["id"]
    call = prepare(request, "POST", _v1(route_id, "/recover"))
    form = await read_form(request, session)
    body = {"since": _utc(form.get("since", ""))}
    until = _utc(form.get("until", ""))
    if until:
        body["until"] = until
    try:
        result = await call.run(session.grant, body)
    except InputError as exc:
        return await _route_page(
            request, session, route_id, recover_error=exc.message, recover_field=exc.field
        )
    return await _route_page(
        request, session, route_id, done=f"{result['requeued']} failed deliveries queued again"
    )


@page
async def delete_route(request: web.Request, session: Session) -> web.StreamResponse:
    route_id = request.match_info["id"]
    call = prepare(request, "DELETE", _v1(route_id))
    await read_form(request, session)
    await call.run(session.grant)
    raise web.HTTPSeeOther(f"{PREFIX}/routes")


@page
async def retry_delivery(request: web.Request, session: Session) -> web.StreamResponse:
    delivery = request.match_info["id"]
    call = prepare(request, "POST", f"/v1/deliveries/{quote(delivery, safe='')}/retry")
    form = await read_form(request, session)
    await call.run(session.grant)
    route_id = form.get("route", "")
    if not route_id:
        raise web.HTTPSeeOther(f"{PREFIX}/routes")
    raise web.HTTPSeeOther(f"{_page_url(route_id)}?{urlencode({'retried': delivery})}")


ROUTES = [
    ("GET", "/routes", route_list),
    ("GET", "/routes/new", new_route_form),
    ("POST", "/routes/new", create_route),
    ("GET", "/routes/{id}", route_detail),
    ("GET", "/routes/{id}/edit", edit_route_form),
    ("POST", "/routes/{id}/edit", update_route),
    ("POST", "/routes/{id}/rotate", rotate_secret),
    ("POST", "/routes/{id}/test", send_test),
    ("POST", "/routes/{id}/recover", recover),
    ("POST", "/routes/{id}/delete", delete_route),
    ("POST", "/deliveries/{id}/retry", retry_delivery),
]
