"""Admin UI sign-in: the session cookie, sign-out, idle expiry, the admin password, and who
may sign in."""

from __future__ import annotations

import dataclasses

from aiohttp.test_utils import TestClient
from sqlalchemy import update
from yarl import URL

from relay.api.admin.password import set_password
from relay.api.keys import STORE
from relay.auth.passwords import hash_password, verify_password
from relay.config import Settings
from relay.store.schema import admin_sessions
from tests.api.admin.support import csrf_of, sign_in
from tests.api.helpers import call
from tests.conftest import API_TOKEN, MakeClient


async def _login(client: TestClient, **fields: str) -> int:
    page = await client.get("/admin/login")
    data = {"csrf": csrf_of(await page.text()), **fields}
    resp = await client.post("/admin/login", data=data, allow_redirects=False)
    return resp.status


async def test_pages_need_a_session(make_client: MakeClient, settings: Settings) -> None:
    """Without a session a page sends the browser to sign in; an action is refused."""
    client = await make_client(settings, token=None)
    resp = await client.get("/admin/accounts?query=x", allow_redirects=False)
    assert resp.status == 303
    location = URL(resp.headers["Location"])
    assert location.path == "/admin/login"
    assert location.query["next"] == "/admin/accounts?query=x"
    resp = await client.post("/admin/accounts/a/reconnect", data={"csrf": "x"})
    assert resp.status == 401


async def test_the_session_cookie_is_http_only_and_strict(
    make_client: MakeClient, settings: Settings
) -> None:
    """Signing in sets an HttpOnly, SameSite=Strict cookie for /admin (not Secure over
    plain http), and goes where the sign-in page was asked to go."""
    client = await make_client(settings, token=None)
    page = await client.get("/admin/login?next=/admin/routes")
    data = {"csrf": csrf_of(await page.text()), "token": API_TOKEN, "next": "/admin/routes"}
    resp = await client.post("/admin/login?next=/admin/routes", data=data, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/admin/routes"
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("relay_admin="))
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/admin" in lowered
    assert "secure" not in lowered.replace("samesite", "")


async def test_sign_in_refuses_a_forged_form_and_a_foreign_next(
    make_client: MakeClient, settings: Settings
) -> None:
    """The sign-in form needs its own CSRF token; ``next`` may only lead to /admin."""
    client = await make_client(settings, token=None)
    await client.get("/admin/login")
    resp = await client.post("/admin/login", data={"csrf": "forged", "token": API_TOKEN})
    assert resp.status == 403
    page = await client.get("/admin/login")
    data = {"csrf": csrf_of(await page.text()), "token": API_TOKEN}
    resp = await client.post(
        "/admin/login?next=https://evil.example/", data=data, allow_redirects=False
    )
    assert resp.headers["Location"] == "/admin"


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    make_client: MakeClient, settings: Settings
) -> None:
    """Sign-out without the form's token is refused; with it, the session is gone."""
    client = await make_client(settings, token=None)
    csrf = await sign_in(client)
    resp = await client.post("/admin/logout", data={"csrf": "wrong"})
    assert resp.status == 403
    assert (await client.get("/admin/", allow_redirects=False)).status == 200
    resp = await client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/admin/", allow_redirects=False)).status == 303
    async with client.app[STORE].read() as conn:
        assert (await conn.execute(admin_sessions.select())).first() is None


async def test_an_idle_session_expires(make_client: MakeClient, settings: Settings) -> None:
    """A session unused for longer than security.admin_idle_minutes must sign in again."""
    short = dataclasses.replace(
        settings, security=dataclasses.replace(settings.security, admin_idle_minutes=5)
    )
    client = await make_client(short, token=None)
    await sign_in(client)
    async with client.app[STORE].write() as conn:
        await conn.execute(
            update(admin_sessions).values(seen_ms=admin_sessions.c.seen_ms - 4 * 60_000)
        )
    assert (await client.get("/admin/", allow_redirects=False)).status == 200
    async with client.app[STORE].write() as conn:
        await conn.execute(
            update(admin_sessions).values(seen_ms=admin_sessions.c.seen_ms - 6 * 60_000)
        )
    resp = await client.get("/admin/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/admin/login")


async def test_revoking_the_token_ends_its_sessions(
    make_client: MakeClient, settings: Settings
) -> None:
    """A session signed in with an API token ends when that token is deleted."""
    client = await make_client(settings)
    issued = await call(client, "POST", "/v1/tokens", {"description": "admin"})
    await sign_in(client, issued["token"])
    assert (await client.get("/admin/", allow_redirects=False)).status == 200
    await call(client, "DELETE", f"/v1/tokens/{issued['id']}")
    assert (await client.get("/admin/", allow_redirects=False)).status == 303


async def test_only_a_token_that_may_do_everything_signs_in(
    make_client: MakeClient, settings: Settings
) -> None:
    """A token limited to some permissions cannot open the admin UI; a wrong token neither."""
    client = await make_client(settings)
    limited = await call(
        client,
        "POST",
        "/v1/tokens",
        {"description": "reader", "permissions": {"account": ["read"]}},
    )
    assert await _login(client, token=limited["token"]) == 401
    assert await _login(client, token="not-a-token") == 401
    assert await _login(client) == 401


async def test_the_admin_password_signs_in(make_client: MakeClient, settings: Settings) -> None:
    """With a password set (stored hashed), it signs in; a wrong one does not."""
    client = await make_client(settings, token=None)
    assert await _login(client, password="correct horse battery") == 401
    stored = hash_password("correct horse battery")
    assert "correct horse" not in stored
    async with client.app[STORE].write() as conn:
        await set_password(conn, stored)
    assert await _login(client, password="wrong horse battery") == 401
    assert await _login(client, password="correct horse battery") == 303
    assert (await client.get("/admin/", allow_redirects=False)).status == 200


def test_password_hashes_verify_only_their_password() -> None:
    """scrypt hashes: salted (two hashes differ), verified in constant time, short refused."""
    first, second = hash_password("a long enough one"), hash_password("a long enough one")
    assert first != second
    assert verify_password("a long enough one", first)
    assert not verify_password("a long enough onf", first)
    assert not verify_password("a long enough one", "scrypt$broken")
    try:
        hash_password("short")
    except ValueError:
        pass
    else:
        raise AssertionError("a short password was accepted")


async def test_a_page_opened_from_another_site_is_loaded_again_from_here(
    make_client: MakeClient, settings: Settings
) -> None:
    """A browser coming from another site (Microsoft's consent) does not send the Strict
    cookie: the page is loaded once more from here (a meta refresh, no script), which does;
    from here, without a session, it is the sign-in page."""
    client = await make_client(settings, token=None)
    cross = await client.get(
        "/admin/accounts/main?state=new",
        headers={"Sec-Fetch-Site": "cross-site"},
        allow_redirects=False,
    )
    assert cross.status == 200
    html = await cross.text()
    assert '<meta http-equiv="refresh" content="0; url=/admin/accounts/main?state=new">' in html
    assert "<script" not in html
    here = await client.get(
        "/admin/accounts/main?state=new",
        headers={"Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    assert here.status == 303
    assert URL(here.headers["Location"]).path == "/admin/login"


async def _cookies(client: TestClient, headers: dict[str, str]) -> list[str]:
    """The admin cookies set by the sign-in page's form and by signing in (a fresh jar)."""
    client.session.cookie_jar.clear()
    page = await client.get("/admin/login", headers=headers)
    set_cookies = list(page.headers.getall("Set-Cookie"))
    data = {"csrf": csrf_of(await page.text()), "token": API_TOKEN}
    # A Secure cookie is not sent back over plain http by the client: send it by hand.
    login = next(c for c in set_cookies if c.startswith("relay_admin_login="))
    cookie = {"Cookie": login.split(";")[0]}
    client.session.cookie_jar.clear()
    resp = await client.post(
        "/admin/login", data=data, headers={**headers, **cookie}, allow_redirects=False
    )
    assert resp.status == 303
    set_cookies += resp.headers.getall("Set-Cookie")
    # Not the expired one that removes the form's cookie once signed in.
    found = [c.lower() for c in set_cookies if c.startswith("relay_admin")]
    found = [c for c in found if "max-age=0" not in c]
    assert len(found) == 2
    return found


def _secure(cookies: list[str]) -> set[bool]:
    return {"; secure" in c for c in cookies}


async def test_the_cookie_is_secure_behind_a_trusted_https_proxy_only(
    make_client: MakeClient, settings: Settings
) -> None:
    """X-Forwarded-Proto: https makes the admin cookies Secure only when the connection
    comes from one of security.trusted_proxies (and the proxy itself says https); from
    anyone else it is ignored."""
    https = {"X-Forwarded-Proto": "https"}
    client = await make_client(settings, token=None)
    assert _secure(await _cookies(client, https)) == {False}
    behind = dataclasses.replace(
        settings,
        security=dataclasses.replace(settings.security, trusted_proxies=("127.0.0.0/8",)),
    )
    proxied = await make_client(behind, token=None)
    assert _secure(await _cookies(proxied, {})) == {False}
    assert _secure(await _cookies(proxied, {"X-Forwarded-Proto": "https, http"})) == {False}
    assert _secure(await _cookies(proxied, https)) == {True}
