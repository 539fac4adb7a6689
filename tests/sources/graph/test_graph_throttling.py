"""End to end: a polled Graph mailbox that Graph throttles (429 with Retry-After)."""

from __future__ import annotations

import warnings
from typing import Any

import aiohttp
import httpx
import pytest
import structlog

from relay.sandbox.server import RunningSandbox
from relay.sources.graph.watcher import _retry_after
from tests.api.helpers import call
from tests.auth.conftest import SHARED, SHARED_PAYLOAD
from tests.sandbox.graph_helpers import admin, deliver
from tests.sources.graph.test_graph_backend import (  # noqa: F401
    Start,
    _graph_main,
    _graph_state,
    start,
)
from tests.sources.imap.relay_support import stored_events, wait_events, wait_state, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError

RETRY_AFTER = 2
# msgraph's retry handler makes four requests (three retries) before it gives up: one
# throttled request more and the 429 reaches the relay's own handling.
THROTTLED = 5
# Arrival times are read by another process: a few milliseconds of slack.
SLACK = 0.05


async def _requests(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await admin(http, sandbox, "GET", f"mailboxes/{SHARED}/requests")
    return found


async def test_throttled_polling_waits_retry_after_and_loses_nothing(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """A delegated shared mailbox watched by delta polling is throttled for more requests
    than msgraph retries: no request reaches the mailbox sooner than Retry-After after a
    429, the account stays connected without a connectError, the throttling is logged, and
    the mail delivered meanwhile arrives as exactly one messageNew."""
    client = await start()
    await _graph_main(client, http, sandbox)
    # INBOX only: one delta chain, so each request after a 429 is the retry of the one
    # before (with every folder, the folders' deltas run side by side).
    await call(client, "POST", "/v1/account", {**SHARED_PAYLOAD, "path": "INBOX"})
    await wait_state(client, "shared", "connected")
    assert (await _graph_state(client, "shared"))["mode"] == "polling"

    with structlog.testing.capture_logs() as logs:
        await admin(
            http,
            sandbox,
            "POST",
            f"mailboxes/{SHARED}/throttle",
            {"requests": THROTTLED, "retryAfter": RETRY_AFTER},
        )
        await deliver(http, sandbox, mailbox=SHARED, subject="while throttled")
        (new,) = await wait_events(client, "shared", "messageNew", within=4 * THROTTLED)
        seen = len(await _requests(http, sandbox))

        async def polled_again() -> bool:
            later = (await _requests(http, sandbox))[seen:]
            return sum(r["status"] == 200 for r in later) >= 3

        # A few more polls after the message: it must not be reported again.
        await wait_until(polled_again, "three more polls")

    assert new["data"]["subject"] == "while throttled"
    assert len(await stored_events(client, "shared", "messageNew")) == 1
    recorded = await _requests(http, sandbox)
    throttled = [n for n, r in enumerate(recorded) if r["throttled"]]
    assert len(throttled) == THROTTLED
    gaps = [recorded[n + 1]["time"] - recorded[n]["time"] for n in throttled]
    assert min(gaps) >= RETRY_AFTER - SLACK, gaps
    assert await stored_events(client, "shared", "connectError") == []
    assert await wait_state(client, "shared", "connected") == "connected"
    waits = [e for e in logs if e["event"] == "graph throttled; waiting"]
    assert waits
    assert {(e["account"], e["retry_after"]) for e in waits} == {("shared", RETRY_AFTER)}
    assert not [e for e in logs if e["event"] == "graph account failed"]


# Graph's time for the HTTP date below, 30 s before it.
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (httpx.Headers({"Retry-After": "2"}), 2.0),
        # Read as its first character once: 1 second instead of 12.
        (httpx.Headers({"Retry-After": "12"}), 12.0),
        (httpx.Headers({"retry-after": "Fri, 15 Jan 2027 08:00:30 GMT"}), 30.0),
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": ["120"]}, 120.0),
        (httpx.Headers({"Retry-After": "soon"}), None),
        (httpx.Headers({"Content-Type": "application/json"}), None),
        (None, None),
    ],
)
def test_retry_after_is_read_from_any_header_shape(headers: Any, expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP date, from httpx headers or a plain mapping of
    strings or lists; None when missing or unreadable."""
    exc = APIError("throttled", 429, headers)

    assert _retry_after(exc, NOW) == expected
