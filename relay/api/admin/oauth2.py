"""OAuth2 applications: the list, add, edit and delete, through ``/v1/oauth2``.

The client secret is write-only, as in the API: the form has an empty password box (typed:
a new secret is stored; empty: the stored one is kept) and the pages say only whether one
is set. Application ids are made by the relay (never ``new``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.api.admin.forms import app_payload, field_errors
from relay.api.admin.pages import PREFIX, api, page, read_form, render
from relay.api.admin.session import Session
from relay.api.dispatch import prepare
from relay.errors import InputError

__all__ = ["ROUTES"]

APP_FIELDS = (
    "name",
    "description",
    "provider",
    "enabled",
    "clientId",
    "clientSecret",
    "authority",
    "redirectUrl",
    "baseScopes",
    "extraScopes",
    "skipScopes",
)


def _v1(app_id: str, suffix: str = "") -> str:
    return f"/v1/oauth2/{quote(app_id, safe='')}{suffix}"


@page
async def app_list(request: web.Request, session: Session) -> web.StreamResponse:
    listing = await api(request, session, "GET", "/v1/oauth2?pageSize=1000")
    return render(
        request,
        session,
        "oauth2_apps.html",
        {"listing": listing, "done": request.query.get("done", "")},
    )


def _form_values(app: dict[str, Any] | None) -> dict[str, Any]:
    if app is None:
        return {"provider": "outlook", "authority": "common", "baseScopes": "imap", "enabled": "on"}
    return {
        **{k: app.get(k) or "" for k in ("name", "description", "provider", "clientId")},
        "authority": app["authority"],
        "redirectUrl": app.get("redirectUrl") or "",
        "baseScopes": app["baseScopes"],
        "extraScopes": " ".join(app["extraScopes"]),
        "skipScopes": " ".join(app["skipScopes"]),
        "enabled": "on" if app["enabled"] else "",
        "hasClientSecret": app["hasClientSecret"],
    }


def _form_page(
    request: web.Request,
    session: Session,
    form: dict[str, Any],
    errors: dict[str, str],
    app: dict[str, Any] | None,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        session,
        "oauth2_form.html",
        {"form": form, "errors": errors, "app": app, "done": request.query.get("done", "")},
        status=status,
    )


@page
async def new_app_form(request: web.Request, session: Session) -> web.StreamResponse:
    return _form_page(request, session, _form_values(None), {}, None)


@page
async def edit_app_form(request: web.Request, session: Session) -> web.StreamResponse:
    app = await api(request, session, "GET", _v1(request.match_info["app"]))
    return _form_page(request, session, _form_values(app), {}, app)


async def _save(request: web.Request, session: Session, app_id: str | None) -> web.Response:
    call = (
        prepare(request, "POST", "/v1/oauth2")
        if app_id is None
        else prepare(request, "PUT", _v1(app_id))
    )
    # Read before the form: the edit page shows the application as stored on an error.
    app = await api(request, session, "GET", _v1(app_id)) if app_id is not None else None
    form = await read_form(request, session)
    try:
        result = await call.run(session.grant, app_payload(form, editing=app_id is not None))
    except InputError as exc:
        shown: dict[str, Any] = {k: v for k, v in form.items() if k != "clientSecret"}
        if app is not None:
            shown["provider"] = app["provider"]
            shown["hasClientSecret"] = app["hasClientSecret"]
        return _form_page(
            request, session, shown, field_errors(exc, APP_FIELDS), app, status=exc.status
        )
    saved = app_id or result["id"]
    raise web.HTTPSeeOther(f"{PREFIX}/oauth2/{quote(saved, safe='')}?done=saved")


@page
async def create_app(request: web.Request, session: Session) -> web.StreamResponse:
    return await _save(request, session, None)


@page
async def update_app(request: web.Request, session: Session) -> web.StreamResponse:
    return await _save(request, session, request.match_info["app"])


@page
async def delete_app(request: web.Request, session: Session) -> web.StreamResponse:
    app_id = request.match_info["app"]
    call = prepare(request, "DELETE", _v1(app_id))
    await read_form(request, session)
    await call.run(session.grant)
    raise web.HTTPSeeOther(f"{PREFIX}/oauth2?{urlencode({'done': f'{app_id} deleted'})}")


ROUTES = [
    ("GET", "/oauth2", app_list),
    ("GET", "/oauth2/new", new_app_form),
    ("POST", "/oauth2/new", create_app),
    ("GET", "/oauth2/{app}", edit_app_form),
    ("POST", "/oauth2/{app}", update_app),
    ("POST", "/oauth2/{app}/delete", delete_app),
]
