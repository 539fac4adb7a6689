"""Helpers for the admin UI's tests: sign in with the test client, read forms' CSRF tokens."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from tests.conftest import API_TOKEN

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


async def sign_in(client: TestClient, token: str = API_TOKEN) -> str:
    """Sign in with ``token``; the session's CSRF token."""
    page = await client.get("/admin/login")
    login_csrf = csrf_of(await page.text())
    resp = await client.post(
        "/admin/login", data={"csrf": login_csrf, "token": token}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    home = await client.get("/admin/")
    assert home.status == 200
    return csrf_of(await home.text())
