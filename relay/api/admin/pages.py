"""What every admin page shares: the signed-in check, rendering, forms with their CSRF
token, HTML error pages and the security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from relay.api.admin.session import Session, check_csrf, current
from relay.api.dispatch import keep_unread, prepare
from relay.api.keys import NODE
from relay.errors import Conflict, Forbidden, InputError, NotFound, RelayError

__all__ = [
    "CSP",
    "AdminHandler",
    "api",
    "page",
    "read_form",
    "render",
    "security_headers",
]

# Scripts and styles only from our own static files: no inline script or style at all.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PREFIX = "/admin"

AdminHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def render(
    request: web.Request,
    session: Session | None,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> web.Response:
    """A page; every value is escaped by the template engine (autoescape)."""
    values = {
        "csrf": session.csrf if session else "",
        "signed_in": session is not None,
        "subject": session.subject if session else "",
        "node": request.app[NODE],
        "path": request.path,
        **context,
    }
    return aiohttp_jinja2.render_template(template, request, values, status=status)


def _error_page(request: web.Request, session: Session, status: int, message: str) -> web.Response:
    return render(
        request, session, "error.html", {"status": status, "message": message}, status=status
    )


def page(handler: AdminHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An admin page: signed-in only (others go to the sign-in page); the API's errors shown
    as an HTML page with their status."""

    @wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        # Calls of the API after the form is read are copied from this (relay.api.dispatch).
        keep_unread(request)
        session = await current(request)
        if session is None:
            if request.method == "GET" and request.headers.get("Sec-Fetch-Site") == "cross-site":
                # A browser arriving from another site (Microsoft's consent sends it back
                # here) does not send the SameSite=Strict cookie: load the page again from
                # here, which does, before sending the user to sign in.
                return render(request, None, "continue.html", {"target": request.path_qs})
            if request.method == "GET":
                raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(request.path_qs, safe='')}")
            return render(
                request,
                None,
                "error.html",
                {"status": 401, "message": "Your session has ended: sign in again."},
                status=401,
            )
        try:
            return await handler(request, session)
        except NotFound as exc:
            return _error_page(request, session, 404, exc.message)
        except (Forbidden, Conflict, InputError) as exc:
            return _error_page(request, session, exc.status, exc.message)
        except RelayError as exc:
            return _error_page(request, session, 503, str(exc) or "The relay could not do that")

    return wrapped


async def read_form(request: web.Request, session: Session) -> dict[str, str]:
    """The posted form (text fields) once its CSRF token is checked; 403 otherwise."""
    data = await request.post()
    if not check_csrf(session.csrf, data.get("csrf")):
        raise Forbidden("The form's CSRF token is missing or wrong: reload the page and retry")
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def read_form_lists(
    request: web.Request, session: Session
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """As :func:`read_form`, with every value of repeated fields (checkboxes) as well."""
    data = await request.post()
    if not check_csrf(session.csrf, data.get("csrf")):
        raise Forbidden("The form's CSRF token is missing or wrong: reload the page and retry")
    lists: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, str):
            lists.setdefault(key, []).append(value)
    return {k: v[-1] for k, v in lists.items()}, lists


async def api(
    request: web.Request,
    session: Session,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
) -> Any:
    """Read through the API in-process (a GET, nothing to audit): the same views as
    ``/v1``, so that nothing the API withholds (a secret) can reach a page."""
    return await prepare(request, method, path).run(session.grant, body)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the admin UI's pages and files may not be framed, run no
    inline script or style, and are never cached."""
    if not (request.path == PREFIX or request.path.startswith(PREFIX + "/")):
        return
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith(PREFIX + "/static/"):
        response.headers["Cache-Control"] = "no-store"
