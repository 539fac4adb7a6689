"""Admin UI pages without a browser: security headers, escaping, secrets, CSRF on actions
(and their one audit line), the API's validation errors beside the fields, paging."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from relay.api.keys import STORE
from relay.config import Settings
from relay.store import tokens
from tests.api.admin.support import sign_in
from tests.api.helpers import call
from tests.conftest import API_TOKEN, MakeClient

XSS = "<img src=x onerror=alert(1)>"


def _imap_account(account: str, **overrides: Any) -> dict[str, Any]:
    return {
        "account": account,
        "name": "Main",
        "email": "main@example.com",
        "imap": {
            "host": "imap.example.com",
            "port": 993,
            "secure": True,
            "auth": {"user": "main@example.com", "pass": "imap-password-value"},
        },
        **overrides,
    }


async def _admin(make_client: MakeClient, settings: Settings) -> tuple[TestClient, str]:
    client = await make_client(settings)
    return client, await sign_in(client)


async def _audit(client: TestClient) -> list[tuple[str, str, int]]:
    async with client.app[STORE].read() as conn:
        grant = await tokens.find(
            conn, __import__("relay.auth.api_tokens", fromlist=["x"]).hash_token(API_TOKEN)
        )
        assert grant is not None
        _, rows = await tokens.log_page(conn, grant.token_id, 0, 100)
    return [(r["method"], r["route"], r["status"]) for r in rows]


async def test_every_admin_response_carries_the_strict_headers(
    make_client: MakeClient, settings: Settings
) -> None:
    """Pages, the sign-in page and static files: CSP without inline script or style, no
    framing, no sniffing; pages are not cached."""
    client = await make_client(settings)
    login = await client.get("/admin/login")
    await sign_in(client)
    for path in ("/admin/login", "/admin/", "/admin/accounts", "/admin/static/admin.css"):
        resp = login if path == "/admin/login" else await client.get(path)
        assert resp.status == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/admin/")).headers["Cache-Control"] == "no-store"
    api = await client.get("/v1/accounts")
    assert "Content-Security-Policy" not in api.headers


async def test_pages_have_no_inline_script_or_style(
    make_client: MakeClient, settings: Settings
) -> None:
    """What the CSP forbids is not there to be blocked: no script body, style or handler."""
    client, _ = await _admin(make_client, settings)
    await call(client, "POST", "/v1/account", _imap_account("a1"))
    for path in ("/admin/", "/admin/accounts", "/admin/accounts/a1", "/admin/add-account"):
        html = await (await client.get(path)).text()
        assert "<style" not in html
        assert " style=" not in html
        assert " onclick=" not in html
        for tag in html.split("<script")[1:]:
            assert tag.split(">", 1)[1].startswith("</script>"), path


async def test_what_accounts_hold_is_escaped(make_client: MakeClient, settings: Settings) -> None:
    """An account whose name and id are markup shows as text, on the list and its page."""
    client, _ = await _admin(make_client, settings)
    await call(client, "POST", "/v1/account", _imap_account("x<b>y", name=XSS))
    for path in ("/admin/accounts", "/admin/accounts/x%3Cb%3Ey"):
        html = await (await client.get(path)).text()
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert XSS not in html
        assert "x<b>y" not in html


async def test_secrets_are_never_rendered(make_client: MakeClient, settings: Settings) -> None:
    """The IMAP password is not on the account's pages; a route's secret is shown once, in
    the answer that made it, and never again."""
    client, csrf = await _admin(make_client, settings)
    await call(client, "POST", "/v1/account", _imap_account("a1"))
    for path in ("/admin/accounts", "/admin/accounts/a1"):
        assert "imap-password-value" not in await (await client.get(path)).text()
    made = await client.post(
        "/admin/routes/new",
        data={
            "csrf": csrf,
            "url": "https://hooks.example.com/in",
            "enabled": "on",
            "headers": "X-Api-Key: header-secret-value",
        },
    )
    html = await made.text()
    assert made.status == 200, html
    secret = html.split('id="new-secret"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert secret.startswith("whsec_")
    route_id = html.split('id="route-id">')[1].split("<")[0]
    later = await (await client.get(f"/admin/routes/{route_id}")).text()
    assert secret not in later
    assert "header-secret-value" not in later
    assert "X-Api-Key" in later


async def test_actions_need_the_csrf_token_and_write_one_audit_line(
    make_client: MakeClient, settings: Settings
) -> None:
    """A reconnect without the form's token changes nothing; with it, it is requested
    through the API's endpoint, which writes the one audit line the API would."""
    client, csrf = await _admin(make_client, settings)
    await call(client, "POST", "/v1/account", _imap_account("a1"))
    before = await _audit(client)
    for forged in ({}, {"csrf": "forged"}):
        resp = await client.post("/admin/accounts/a1/reconnect", data=forged)
        assert resp.status == 403
    assert "reconnectRequested" not in await call(client, "GET", "/v1/account/a1")
    assert await _audit(client) == before
    resp = await client.post(
        "/admin/accounts/a1/reconnect", data={"csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303
    assert "reconnectRequested" in await call(client, "GET", "/v1/account/a1")
    after = await _audit(client)
    assert after[0] == ("PUT", "/v1/account/{account}/reconnect", 200)
    assert len(after) == len(before) + 1


async def test_delete_asks_first_then_deletes(make_client: MakeClient, settings: Settings) -> None:
    """Delete is a confirmation page (GET changes nothing), then a POST with the token."""
    client, csrf = await _admin(make_client, settings)
    await call(client, "POST", "/v1/account", _imap_account("a1"))
    confirm = await client.get("/admin/accounts/a1/delete")
    assert "confirm-delete" in await confirm.text()
    await call(client, "GET", "/v1/account/a1")
    resp = await client.post(
        "/admin/accounts/a1/delete", data={"csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303
    await call(client, "GET", "/v1/account/a1", status=404)
    missing = await client.get("/admin/accounts/a1")
    assert missing.status == 404


async def test_the_apis_validation_errors_show_beside_the_fields(
    make_client: MakeClient, settings: Settings
) -> None:
    """The add-account form answers the API's own messages next to the inputs they name,
    keeps what was typed (never the password), and stores nothing."""
    client, csrf = await _admin(make_client, settings)
    form = {
        "csrf": csrf,
        "kind": "imap",
        "account": "a1",
        "name": "Main",
        "email": "main@example.com",
        "imap.host": "imap.example.com",
        "imap.port": "not-a-port",
        "imap.auth.user": "main@example.com",
        "imap.auth.pass": "typed-password",
    }
    resp = await client.post("/admin/add-account", data=form)
    html = await resp.text()
    assert resp.status == 400
    assert 'data-field="imap.port"' in html
    assert "imap.port:" in html
    assert "typed-password" not in html
    assert 'value="imap.example.com"' in html
    resp = await client.post(
        "/admin/add-account", data={**form, "imap.port": "993", "email": "not an address"}
    )
    assert 'data-field="email"' in await resp.text()
    shared = {
        "csrf": csrf,
        "kind": "shared",
        "account": "s1",
        "name": "Shared",
        "oauth2.auth.delegatedAccount": "ghost",
        "oauth2.auth.delegatedUser": "s@example.com",
    }
    resp = await client.post("/admin/add-account", data=shared)
    html = await resp.text()
    assert 'data-field="oauth2.auth.delegatedAccount"' in html
    assert "account &#39;ghost&#39; does not exist" in html
    assert (await call(client, "GET", "/v1/accounts"))["total"] == 0


async def test_the_account_list_pages_and_filters_on_the_server(
    make_client: MakeClient, settings: Settings
) -> None:
    """50 accounts a page with links to the next and previous; search by id or email, and by
    state."""
    client, _ = await _admin(make_client, settings)
    for n in range(55):
        await call(
            client, "POST", "/v1/account", _imap_account(f"acct-{n:02}", email=f"u{n}@example.com")
        )
    first = await (await client.get("/admin/accounts")).text()
    assert first.count('href="/admin/accounts/acct-') == 50
    assert 'rel="next"' in first
    assert 'rel="prev"' not in first
    second = await (await client.get("/admin/accounts?page=2")).text()
    assert second.count('href="/admin/accounts/acct-') == 5
    assert 'rel="prev"' in second
    found = await (await client.get("/admin/accounts?query=u17%40example.com")).text()
    assert found.count('href="/admin/accounts/acct-') == 1
    assert "acct-17" in found
    none = await (await client.get("/admin/accounts?state=connected")).text()
    assert 'href="/admin/accounts/acct-' not in none


async def test_recover_takes_a_time_range(make_client: MakeClient, settings: Settings) -> None:
    """The recover form sends since and until (UTC) to the API: an end before the start is
    the API's error beside ``until``; a range is recovered and reported."""
    client, csrf = await _admin(make_client, settings)
    route = await call(
        client, "POST", "/v1/webhooks", {"url": "https://hooks.example.com/in"}, status=201
    )
    path = f"/admin/routes/{route['id']}/recover"
    backwards = {"csrf": csrf, "since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}
    html = await (await client.post(path, data=backwards)).text()
    assert 'data-field="until"' in html
    assert "until: must be later than since" in html
    fine = {"csrf": csrf, "since": "2026-01-01T00:00", "until": "2026-01-02T00:00:30"}
    html = await (await client.post(path, data=fine)).text()
    assert "0 failed deliveries queued again" in html
    assert 'data-field="until"' not in html


async def test_an_account_named_new_opens(make_client: MakeClient, settings: Settings) -> None:
    """The add form lives outside the accounts' own paths: an account whose id is ``new``
    has its page, and the form its own."""
    client, _ = await _admin(make_client, settings)
    await call(client, "POST", "/v1/account", _imap_account("new"))
    html = await (await client.get("/admin/accounts/new")).text()
    assert 'id="account-id">new<' in html
    assert 'id="add-account"' in await (await client.get("/admin/add-account")).text()
