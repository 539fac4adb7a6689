"""Admin UI sessions: sign-in with an API token or the admin password, a session cookie,
the CSRF token of every form, sign-out and idle expiry.

The browser holds a random session key in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` over https); the store keeps its SHA-256 (``admin_sessions``), so a session works
on every node and ends everywhere at sign-out. A session signed in with an API token
re-reads that token's grant on each request: revoking the token ends the session. Only a
token that may use every route (no account binding, no ``permissions`` list, the ``api``
scope) may sign in; its restrictions (addresses, referrers, rate limit) still apply to every
action, through the same check as the API's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from relay.api.admin.password import PASSWORD_SUBJECT, stored_password
from relay.api.guard import served_over_https
from relay.api.keys import AUTH_CACHE, SETTINGS, STORE
from relay.auth.api_tokens import hash_token
from relay.auth.grants import SCOPES, Grant
from relay.auth.passwords import verify_password
from relay.store import admin_sessions, tokens
from relay.store.engine import now_ms

__all__ = [
    "COOKIE",
    "COOKIE_PATH",
    "LOGIN_COOKIE",
    "Session",
    "admin_problem",
    "check_csrf",
    "current",
    "end",
    "password_grant",
    "password_matches",
    "set_cookie",
    "start",
    "token_grant",
]

COOKIE = "relay_admin"
# The sign-in form's own CSRF token (double submit: this cookie and a hidden field).
LOGIN_COOKIE = "relay_admin_login"
COOKIE_PATH = "/admin"
# A session's last use is written at most this often (not on every page).
_TOUCH_EVERY_MS = 15_000

SESSION = web.RequestKey("admin_session", object)


@dataclass(frozen=True, slots=True)
class Session:
    key_hash: str
    grant: Grant
    csrf: str
    subject: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def admin_problem(grant: Grant) -> str | None:
    """Why ``grant``'s token may not sign in to the admin UI (None: it may)."""
    if grant.account is not None:
        return "This token is bound to an account; sign in with a token that may do everything"
    if grant.permissions is not None:
        return "This token has limited permissions; sign in with a token that may do everything"
    if "api" not in grant.scopes:
        return "This token lacks the api scope"
    return None


def password_grant() -> Grant:
    """What a session signed in with the admin password may do: everything."""
    return Grant(token_id=PASSWORD_SUBJECT, scopes=frozenset(SCOPES))


async def _grant_of(app: web.Application, digest: str) -> Grant | None:
    cache = app[AUTH_CACHE]
    grant = cache.get(digest, time.monotonic())
    if grant is None:
        async with app[STORE].read() as conn:
            grant = await tokens.find(conn, digest)
        if grant is None:
            return None
        cache.put(digest, grant, time.monotonic())
    if grant.expired(now_ms()) or admin_problem(grant) is not None:
        return None
    return grant


async def token_grant(app: web.Application, token: str) -> tuple[Grant | None, str]:
    """The grant of ``token`` and its hash; None (with why) when it may not sign in."""
    digest = hash_token(token)
    cache = app[AUTH_CACHE]
    grant = cache.get(digest, time.monotonic())
    if grant is None:
        async with app[STORE].read() as conn:
            grant = await tokens.find(conn, digest)
    if grant is None or grant.expired(now_ms()):
        return None, "Invalid or expired token"
    problem = admin_problem(grant)
    if problem is not None:
        return None, problem
    return grant, digest


async def password_matches(app: web.Application, password: str) -> bool:
    """Whether ``password`` is the admin password (False when none is set)."""
    async with app[STORE].read() as conn:
        stored = await stored_password(conn)
    if stored is None or not password:
        return False
    # scrypt takes tens of milliseconds of CPU: not on the event loop.
    return await asyncio.to_thread(verify_password, password, stored)


async def start(app: web.Application, grant: Grant, token_hash: str | None) -> str:
    """Open a session for ``grant``; the key for the browser's cookie."""
    key = secrets.token_urlsafe(32)
    async with app[STORE].write(notify=False) as conn:
        await admin_sessions.add(
            conn,
            key_hash=_hash(key),
            subject=grant.token_id,
            token_hash=token_hash,
            csrf=secrets.token_urlsafe(32),
            now_ms=now_ms(),
        )
    return key


def _idle_ms(app: web.Application) -> int:
    return int(app[SETTINGS].security.admin_idle_minutes * 60_000)


async def current(request: web.Request) -> Session | None:
    """The request's signed-in session; None when there is none, it idled out, or its
    token was revoked."""
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    key_hash = _hash(key)
    app = request.app
    async with app[STORE].read() as conn:
        row = await admin_sessions.find(conn, key_hash)
    if row is None:
        return None
    now = now_ms()
    if now - int(row["seen_ms"]) > _idle_ms(app):
        async with app[STORE].write(notify=False) as conn:
            await admin_sessions.drop(conn, key_hash)
        return None
    subject = str(row["subject"])
    if row["token_hash"] is None:
        if subject != PASSWORD_SUBJECT:
            return None
        grant: Grant | None = password_grant()
    else:
        grant = await _grant_of(app, str(row["token_hash"]))
    if grant is None:
        async with app[STORE].write(notify=False) as conn:
            await admin_sessions.drop(conn, key_hash)
        return None
    if now - int(row["seen_ms"]) > _TOUCH_EVERY_MS:
        async with app[STORE].write(notify=False) as conn:
            await admin_sessions.touch(conn, key_hash, now)
            # Sessions that idled out and were never used again.
            await admin_sessions.prune(conn, now - _idle_ms(app))
    return Session(key_hash=key_hash, grant=grant, csrf=str(row["csrf"]), subject=subject)


async def end(request: web.Request, session: Session) -> None:
    async with request.app[STORE].write(notify=False) as conn:
        await admin_sessions.drop(conn, session.key_hash)


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    """A cookie only the admin UI's pages get: HttpOnly, SameSite=Strict, and Secure when the
    request came over https (directly, or through a trusted proxy that says so)."""
    response.set_cookie(
        name,
        value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=served_over_https(request),
    )


def check_csrf(expected: str, given: object) -> bool:
    """Whether a form's CSRF field matches (constant time)."""
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)
