"""Sign-in (an API token or the admin password) and sign-out."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from relay.api.admin.pages import PREFIX, page, read_form, render
from relay.api.admin.session import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    Session,
    check_csrf,
    current,
    end,
    password_grant,
    password_matches,
    set_cookie,
    start,
    token_grant,
)
from relay.api.keys import RATE_LIMITER
from relay.auth.grants import Grant

__all__ = ["login_form", "login_submit", "logout"]

# Sign-in attempts allowed per client address and window (seconds).
ATTEMPTS, WINDOW = 10, 60.0


def _next(value: str | None) -> str:
    """Where to go after signing in: an admin page of ours, nothing else."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    nonce = secrets.token_urlsafe(24)
    response = render(
        request,
        None,
        "login.html",
        {"login_csrf": nonce, "error": error, "next": _next(request.query.get("next"))},
        status=status,
    )
    set_cookie(request, response, LOGIN_COOKIE, nonce)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    if await current(request) is not None:
        raise web.HTTPSeeOther(_next(request.query.get("next")))
    return _login_page(request)


async def login_submit(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not check_csrf(expected, data.get("csrf")):
        return _login_page(request, "The sign-in form expired: try again.", status=403)
    decision = request.app[RATE_LIMITER].hit(
        f"admin-login:{request.remote}", ATTEMPTS, WINDOW, time.monotonic()
    )
    if not decision.admitted:
        return _login_page(request, "Too many sign-in attempts: wait a minute.", status=429)
    token = str(data.get("token") or "").strip()
    password = str(data.get("password") or "")
    grant: Grant | None = None
    token_hash: str | None = None
    error = "Enter an API token or the admin password."
    if token:
        grant, outcome = await token_grant(request.app, token)
        token_hash = outcome if grant is not None else None
        error = outcome if grant is None else ""
    elif password:
        if await password_matches(request.app, password):
            grant = password_grant()
        else:
            error = "Wrong password (or none is set: see relay admin-password)."
    if grant is None:
        return _login_page(request, error, status=401)
    key = await start(request.app, grant, token_hash)
    redirect = web.HTTPSeeOther(_next(str(request.query.get("next") or data.get("next") or "")))
    set_cookie(request, redirect, COOKIE, key)
    redirect.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    raise redirect


@page
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    await read_form(request, session)
    await end(request, session)
    redirect = web.HTTPSeeOther(f"{PREFIX}/login")
    redirect.del_cookie(COOKIE, path=COOKIE_PATH)
    raise redirect
