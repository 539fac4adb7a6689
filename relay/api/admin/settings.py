"""The global settings, the keys of ``POST /v1/settings``: the global webhook (URL, events,
enabled, custom headers), the service URL and secret, and what ``messageNew`` carries.

Saving sends only the keys the form changed. Write-only values (the service secret, the
custom headers' values) are never shown: empty boxes keep them. A global webhook made by
the save has its ``whsec_`` secret shown once, in the answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.admin.forms import NOTIFY_FLAGS, NOTIFY_SIZES, field_errors, settings_payload
from relay.api.admin.pages import api, page, read_form_lists, render
from relay.api.admin.session import Session
from relay.api.dispatch import prepare
from relay.errors import InputError
from relay.events.model import EVENT_TYPES

__all__ = ["ROUTES"]

SETTINGS_FIELDS = (
    "webhooks",
    "webhookEvents",
    "webhooksEnabled",
    "webhooksCustomHeaders",
    "serviceUrl",
    "serviceSecret",
    "notifyHeaders",
    *NOTIFY_FLAGS,
    *NOTIFY_SIZES,
)


def _form_values(current: dict[str, Any]) -> dict[str, Any]:
    form: dict[str, Any] = {
        "webhooks": current.get("webhooks") or "",
        "webhooksEnabled": "on" if current.get("webhooksEnabled") else "",
        "events": [e for e in current.get("webhookEvents") or [] if e != "*"],
        "serviceUrl": current.get("serviceUrl") or "",
        "notifyHeaders": " ".join(current.get("notifyHeaders") or []),
    }
    for key in NOTIFY_FLAGS:
        form[key] = "on" if current.get(key) else ""
    for key in NOTIFY_SIZES:
        form[key] = "" if current.get(key) is None else str(current[key])
    return form


def _page(
    request: web.Request,
    session: Session,
    current: dict[str, Any],
    form: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    **extra: Any,
) -> web.Response:
    return render(
        request,
        session,
        "settings.html",
        {
            "form": form,
            "errors": errors,
            "event_types": EVENT_TYPES,
            "header_names": [h["key"] for h in current.get("webhooksCustomHeaders") or []],
            "secret_set": bool(current.get("serviceSecretSet")),
            **extra,
        },
        status=status,
    )


@page
async def settings_form(request: web.Request, session: Session) -> web.StreamResponse:
    current = await api(request, session, "GET", "/v1/settings")
    return _page(request, session, current, _form_values(current), {})


@page
async def save_settings(request: web.Request, session: Session) -> web.StreamResponse:
    call = prepare(request, "POST", "/v1/settings")
    current = await api(request, session, "GET", "/v1/settings")
    form, lists = await read_form_lists(request, session)
    events = lists.get("events", [])
    try:
        payload = settings_payload(form, events, current)
        result = await call.run(session.grant, payload) if payload else {"updated": []}
    except InputError as exc:
        shown: dict[str, Any] = {k: v for k, v in form.items() if k != "serviceSecret"}
        shown["events"] = events
        errors = field_errors(exc, SETTINGS_FIELDS)
        return _page(request, session, current, shown, errors, status=exc.status)
    saved = await api(request, session, "GET", "/v1/settings")
    return _page(
        request,
        session,
        saved,
        _form_values(saved),
        {},
        updated=result["updated"],
        webhooks_secret=result.get("webhooksSecret"),
    )


ROUTES = [
    ("GET", "/settings", settings_form),
    ("POST", "/settings", save_settings),
]
