"""Fixtures of the admin UI's browser tests: Debian's Chromium driven by Playwright (no
browser download), and the real peers of the other tests (Dovecot, a webhook receiver)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The relay's sandbox Microsoft 365 of the OAuth2 tests (a shared mailbox's consent).
from tests.auth.conftest import _no_ca_bundle_override, sandbox, signer  # noqa: F401

# The SMTP server of the sending tests (the outbox page).
from tests.send.conftest import smtp  # noqa: F401

# The session's Dovecot of the IMAP tests (reused, not a second one).
from tests.sources.imap.conftest import dovecot  # noqa: F401

CHROMIUM = os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium")
# RELAY_ADMIN_SCREENSHOTS=1: the browser tests write the pages' screenshots to docs/admin/.
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "admin"


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """A headless Chromium (the system's), closed after the test."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test-peers.sh (installs chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def screenshots_wanted() -> bool:
    return os.environ.get("RELAY_ADMIN_SCREENSHOTS") == "1"
