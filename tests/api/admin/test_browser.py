"""The admin UI in a real headless Chromium: sign in, add an IMAP account against Dovecot
and see it connect, see mail arrive as an event and a delivery, make the receiver fail and
retry from the UI; and the XSS, CSRF and CSP rules as a browser applies them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from relay.config import Settings
from tests.api.admin.conftest import SCREENSHOTS, screenshots_wanted
from tests.api.helpers import call
from tests.conftest import API_TOKEN, MakeClient
from tests.peers.dovecot import DovecotServer
from tests.peers.receiver import Receiver
from tests.sources.imap.relay_support import fresh_account, relay_settings, wait_until
from tests.sources.imap.support import message
from tests.webhooks.conftest import loopback_settings

XSS = "<img src=x onerror=alert(1)>"
WAIT = 20.0


@pytest.fixture
def engine_name() -> str:
    """On SQLite only: the pages do not depend on the engine (the other admin tests run on
    both), and each browser start costs."""
    return "sqlite"


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Poll ``check`` until it holds."""
    await wait_until(check, what, within)


async def reload_until(page: Page, selector: str, text: str, what: str) -> None:
    """Reload ``page`` until ``selector`` holds ``text`` (the pages are server-rendered)."""

    async def check() -> bool:
        await page.reload()
        return text in await page.locator(selector).first.inner_text()

    await until(check, what)


async def shot(page: Page, name: str) -> None:
    if screenshots_wanted():
        png = await page.screenshot(full_page=True)

        def write() -> None:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS / f"{name}.png").write_bytes(png)

        await asyncio.to_thread(write)


async def delivery_rows(page: Page) -> list[dict[str, Any]]:
    rows = page.locator("#deliveries tr.delivery")
    out = []
    for i in range(await rows.count()):
        cells = await rows.nth(i).locator("td").all_inner_texts()
        out.append({"id": cells[0], "event": cells[1], "status": cells[3], "code": cells[5]})
    return out


async def test_an_imap_mailbox_from_sign_in_to_a_retried_delivery(
    browser: Browser, make_client: MakeClient, settings: Settings, dovecot: DovecotServer
) -> None:
    """Sign in, add an IMAP account and see it connected, receive mail and see the event and
    its delivery, make the receiver fail, then retry from the UI and see it delivered."""
    user = await fresh_account(dovecot)
    async with Receiver(secret="whsec_placeholder") as rx:
        client = await make_client(loopback_settings(relay_settings(settings)), token=None)
        base = str(client.make_url("/admin"))
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        page = await context.new_page()

        await page.goto(base + "/")
        assert "/admin/login" in page.url
        await shot(page, "sign-in")
        await page.fill("input[name=token]", API_TOKEN)
        await page.click("button[type=submit]")
        await page.wait_for_selector("h1:text('Dashboard')")

        await page.goto(base + "/add-account?kind=imap")
        await page.fill("input[name=account]", "inbox-1")
        await page.fill("input[name=name]", "Inbox one")
        await page.fill("input[name=email]", user.user)
        await page.fill("input[name='imap.host']", "127.0.0.1")
        await page.fill("input[name='imap.port']", "99999")
        await page.fill("input[name='imap.auth.user']", user.user)
        await page.fill("input[name='imap.auth.pass']", user.password)
        await page.click("#add")
        # The API's own validation, beside the field; the form keeps what was typed.
        error = page.locator(".field-error[data-field='imap.port']")
        assert "imap.port" in await error.inner_text()
        await shot(page, "add-account")
        await page.fill("input[name='imap.port']", str(dovecot.port))
        await page.fill("input[name='imap.auth.pass']", user.password)
        await page.click("#add")
        await page.wait_for_selector("#account-id:text('inbox-1')")
        await reload_until(page, "#account-state", "connected", "the account to connect")

        await page.goto(base + "/routes/new")
        await page.fill("input[name=url]", rx.url)
        await page.fill("input[name=description]", "the test receiver")
        await page.click("#save")
        secret = await page.locator("#new-secret").input_value()
        assert secret.startswith("whsec_")
        rx.secret = secret
        route_id = await page.locator("#route-id").inner_text()
        route_url = f"{base}/routes/{route_id}"

        await dovecot.append(user.user, "INBOX", message("Quarterly numbers"))
        await page.goto(base + "/accounts/inbox-1")
        await reload_until(page, "#events", "Quarterly numbers", "the messageNew event")
        await shot(page, "account")
        await page.goto(route_url)
        await reload_until(page, "#deliveries", "delivered", "the delivery")
        await rx.wait_for(1)
        assert rx.accepted()[0].verified

        rx.default_status = 500
        await dovecot.append(user.user, "INBOX", message("Will fail first"))

        async def failed_once() -> bool:
            await page.reload()
            return any(
                r["code"] == "500" and r["status"] in ("pending", "failed")
                for r in await delivery_rows(page)
            )

        await until(failed_once, "a delivery answered 500")
        await shot(page, "route")
        failing = next(r for r in await delivery_rows(page) if r["code"] == "500")
        rx.default_status = 204
        await page.click(f"#deliveries tr[data-id='{failing['id']}'] button.retry")

        async def redelivered() -> bool:
            await page.reload()
            rows = {r["id"]: r for r in await delivery_rows(page)}
            return rows[failing["id"]]["status"] == "delivered"

        await until(redelivered, "the retried delivery to succeed")

        await page.goto(base + "/")
        await shot(page, "dashboard")
        await page.goto(base + "/accounts")
        await shot(page, "accounts")
        await context.close()


async def test_the_browser_enforces_escaping_csrf_and_csp(
    browser: Browser, make_client: MakeClient, settings: Settings
) -> None:
    """Markup in an account shows as text and runs nothing; a form posted without the
    session's CSRF token (same site) or from another site changes nothing; inline script is
    blocked by the Content-Security-Policy."""
    client = await make_client(settings)
    await call(
        client,
        "POST",
        "/v1/account",
        {
            "account": "evil",
            "name": XSS,
            "email": "evil@example.com",
            "imap": {"host": "127.0.0.1", "port": 1, "auth": {"user": "u", "pass": "p"}},
        },
    )
    base = str(client.make_url("/admin"))
    context = await browser.new_context()
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )

    await page.goto(base + "/login")
    await page.fill("input[name=token]", API_TOKEN)
    await page.click("button[type=submit]")
    await page.goto(base + "/accounts")
    assert XSS in await page.locator("#accounts").inner_text()
    assert await page.locator("#accounts img").count() == 0

    # Same site, with the session's cookie but without the form's token.
    status = await page.evaluate(
        """async () => (await fetch('/admin/accounts/evil/delete',
             {method: 'POST', body: new URLSearchParams({confirm: '1'})})).status"""
    )
    assert status == 403
    # Another site's page posting a form here: the Strict cookie is not sent with it.
    other = await context.new_page()
    await other.set_content(
        f'<form method="post" action="{base}/accounts/evil/delete"><button>go</button></form>'
    )
    async with other.expect_navigation():
        await other.click("button")
    assert "session has ended" in await other.inner_text("body")
    await call(client, "GET", "/v1/account/evil")

    # An inline script added to a page does not run.
    await page.goto(base + "/accounts/evil")
    ran = await page.evaluate(
        """() => new Promise(resolve => {
             document.addEventListener('securitypolicyviolation', () => resolve('blocked'));
             const s = document.createElement('script');
             s.textContent = 'window.inlineRan = true';
             document.body.appendChild(s);
             setTimeout(() => resolve(window.inlineRan ? 'ran' : 'silent'), 2000);
           })"""
    )
    assert ran == "blocked"
    assert dialogs == []
    await context.close()
