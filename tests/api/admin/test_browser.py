"""The admin UI in a real headless Chromium: sign in, add an IMAP account against Dovecot
and see it connect, see mail arrive as an event and a delivery, make the receiver fail and
retry from the UI; add a shared mailbox through the sandbox's consent flow, retry a failed
send and save a setting; and the XSS, CSRF and CSP rules as a browser applies them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from relay.config import Settings
from relay.sandbox.server import RunningSandbox
from tests.api.admin.conftest import SCREENSHOTS, screenshots_wanted
from tests.api.helpers import call
from tests.auth.conftest import with_microsoft
from tests.conftest import API_TOKEN, MakeClient
from tests.peers.dovecot import DovecotServer
from tests.peers.receiver import Receiver
from tests.peers.smtp import SmtpPeer
from tests.send.conftest import add_password_account, send_settings, submit
from tests.sources.imap.relay_support import (
    fresh_account,
    relay_settings,
    wait_events,
    wait_until,
)
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


async def test_a_shared_mailbox_through_microsofts_consent_and_the_other_pages(
    browser: Browser,
    make_client: MakeClient,
    settings: Settings,
    sandbox: RunningSandbox,
    smtp: SmtpPeer,
) -> None:
    """Set the service URL on the settings page, register an OAuth2 application on its page,
    add an account through the sandbox's sign-in and consent, then a shared mailbox that
    borrows its tokens; see a failed send on the outbox page and retry it."""
    assert sandbox.seed is not None
    client = await make_client(send_settings(with_microsoft(settings, sandbox)))
    base = str(client.make_url("/admin"))
    relay_url = str(client.make_url("")).rstrip("/")
    back = f"{relay_url}/oauth"
    # The application Microsoft knows, with this relay's address to come back to.
    async with aiohttp.ClientSession() as admin:
        made = await admin.post(
            f"{sandbox.url}/sandbox/apps",
            json={
                "clientId": "admin-ui-app",
                "clientSecret": "admin-ui-secret",
                "redirectUris": [back],
                "tenant": sandbox.seed.tenant_id,
            },
            ssl=False,
        )
        assert made.status == 201, await made.text()
    context = await browser.new_context(
        viewport={"width": 1280, "height": 860}, ignore_https_errors=True
    )
    page = await context.new_page()
    await page.goto(base + "/login")
    await page.fill("input[name=token]", API_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:text('Dashboard')")

    # The address consent links lead to: this relay's.
    await page.goto(base + "/settings")
    await page.fill("input[name=serviceUrl]", relay_url)
    await page.fill("input[name=notifyTextSize]", "4096")
    await page.check("input[name=notifyText]")
    await page.click("#save")
    notice = await page.locator("#notice").inner_text()
    assert notice == "saved: notifyText, notifyTextSize, serviceUrl"
    stored = await call(client, "GET", "/v1/settings")
    assert (stored["serviceUrl"], stored["notifyTextSize"]) == (relay_url, 4096)
    await shot(page, "settings")

    await page.goto(base + "/oauth2/new")
    await page.fill("input[name=name]", "Contoso mail")
    await page.fill("input[name=clientId]", "admin-ui-app")
    await page.fill("input[name=clientSecret]", "admin-ui-secret")
    await page.fill("input[name=authority]", sandbox.seed.tenant_id)
    await page.fill("input[name=redirectUrl]", back)
    await page.fill("input[name=extraScopes]", "Mail.ReadWrite.Shared Mail.Send.Shared")
    await page.click("#save")
    app_id = await page.locator("#app-id").inner_text()
    assert "admin-ui-secret" not in await page.content()
    await page.goto(base + "/oauth2")
    await shot(page, "oauth2-apps")

    await page.goto(base + "/add-account?kind=oauth2")
    await page.fill("input[name=account]", "main")
    await page.fill("input[name=name]", "Main user")
    await page.fill("input[name=email]", sandbox.seed.main_user)
    await page.select_option("select[name='oauth2.provider']", app_id)
    await page.click("#add")
    # Microsoft's (the sandbox's) sign-in and consent page.
    await page.wait_for_selector("input[name=passwd]")
    await page.fill("input[name=login]", sandbox.seed.main_user)
    await page.fill("input[name=passwd]", sandbox.seed.main_password)
    await page.click("button[value=accept]")
    await page.wait_for_selector("#account-id:text('main')")
    assert "accessToken" in await page.locator("#details").inner_text()

    await page.goto(base + "/add-account?kind=shared")
    await page.fill("input[name=account]", "shared")
    await page.fill("input[name=name]", "Shared mailbox")
    await page.select_option("select[name='oauth2.auth.delegatedAccount']", "main")
    await page.fill("input[name='oauth2.auth.delegatedUser']", sandbox.seed.shared_mailbox)
    await page.click("#add")
    await page.wait_for_selector("#account-id:text('shared')")
    details = await page.locator("#details").inner_text()
    assert f"shared mailbox {sandbox.seed.shared_mailbox} via main" in details
    shared = await call(client, "GET", "/v1/account/shared")
    assert shared["oauth2"]["auth"]["delegatedAccount"] == "main"
    await shot(page, "shared-account")

    # A send the server refuses, retried from the outbox page.
    await add_password_account(client, smtp)
    smtp.replies.append("550 5.1.1 Mailbox unavailable")
    queued = await submit(client, {"to": [{"address": "rita@example.net"}], "subject": "Hi"})
    await wait_events(client, "acct", "messageFailed")
    await page.goto(base + "/outbox?status=failed")
    row = page.locator(f"#outbox tr[data-id='{queued['queueId']}']")
    assert "550 5.1.1 Mailbox unavailable" in await row.inner_text()
    await shot(page, "outbox")
    await row.locator("button.retry").click()
    await page.wait_for_selector("#notice")
    await smtp.wait_for(1)
    await page.goto(base + "/outbox?status=sent")
    await reload_until(page, "#outbox", queued["queueId"], "the retried message to be sent")

    await context.close()
