"""The admin web UI at ``/admin``: server-rendered pages over the API.

Pages read through the API's own views (``relay.api.dispatch``, so nothing the API
withholds can be shown) or, for the dashboard's counts, read-only store queries; every
action is a call of the API's endpoint, with its validation, permission check and audit
line. Templates are escaped (autoescape); the only script and style are our own static
files, under a strict Content-Security-Policy (``relay.api.admin.pages.CSP``).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from relay.api.admin import accounts, oauth2, outbox, routes, settings
from relay.api.admin.dashboard import dashboard
from relay.api.admin.pages import PREFIX, security_headers
from relay.api.admin.signin import login_form, login_submit, logout

__all__ = ["setup"]

_HERE = Path(__file__).parent


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(f"{PREFIX}/")


def setup(app: web.Application) -> None:
    """Register the admin UI's pages, files and headers on ``app``."""
    aiohttp_jinja2.setup(
        app,
        # Read once here, at start-up: a file loader would stat files on the event loop.
        loader=jinja2.DictLoader(
            {path.name: path.read_text("utf-8") for path in (_HERE / "templates").glob("*.html")}
        ),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        # The API leaves out unset fields: a missing one renders as nothing.
        undefined=jinja2.ChainableUndefined,
    )
    app.router.add_get(PREFIX, _home)
    app.router.add_get(f"{PREFIX}/", dashboard)
    app.router.add_get(f"{PREFIX}/login", login_form)
    app.router.add_post(f"{PREFIX}/login", login_submit)
    app.router.add_post(f"{PREFIX}/logout", logout)
    for method, path, handler in (
        *accounts.ROUTES,
        *routes.ROUTES,
        *outbox.ROUTES,
        *oauth2.ROUTES,
        *settings.ROUTES,
    ):
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_static(f"{PREFIX}/static", _HERE / "static", append_version=True)
    app.on_response_prepare.append(security_headers)
