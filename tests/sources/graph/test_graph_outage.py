"""End to end: Graph's bad moments (503, 504, hangs, resets) against the sandbox."""

from __future__ import annotations

import ssl
import warnings
from typing import Any

import aiohttp
import httpx
import pytest
import structlog
from aiohttp.test_utils import TestClient

from relay.sandbox.server import RunningSandbox
from relay.sources.graph.outage import delay, transient
from tests.api.helpers import call
from tests.auth.conftest import MAIN, SHARED, SHARED_PAYLOAD
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

# msgraph's retry handler makes four requests (three retries) before a 503 or 504 reaches
# the relay's own handling.
SDK_TRIES = 4
# Arrival times are read by another process: a few milliseconds of slack.
SLACK = 0.05


async def _requests(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, mailbox: str = SHARED
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await admin(http, sandbox, "GET", f"mailboxes/{mailbox}/requests")
    return found


async def _fault(http: aiohttp.ClientSession, sandbox: RunningSandbox, **body: Any) -> str:
    made = await admin(http, sandbox, "POST", "faults", body)
    return str(made["id"])


async def _hits(http: aiohttp.ClientSession, sandbox: RunningSandbox, fault: str) -> int:
    listed = await admin(http, sandbox, "GET", "faults")
    return sum(int(f["hits"]) for f in listed if f["id"] == fault)


async def _polled_shared(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    **graph: Any,
) -> TestClient:
    """A relay watching the delegated shared mailbox's INBOX by delta polling: one delta
    chain, so each request after a failed one is its retry."""
    client = await start(**graph)
    await _graph_main(client, http, sandbox)
    await call(client, "POST", "/v1/account", {**SHARED_PAYLOAD, "path": "INBOX"})
    await wait_state(client, "shared", "connected")
    assert (await _graph_state(client, "shared"))["mode"] == "polling"
    return client


async def _polled_again(http: aiohttp.ClientSession, sandbox: RunningSandbox) -> None:
    """Wait for three more successful polls (a message reported twice would show by then)."""
    seen = len(await _requests(http, sandbox))

    async def polled() -> bool:
        later = (await _requests(http, sandbox))[seen:]
        return sum(r["status"] == 200 for r in later) >= 3

    await wait_until(polled, "three more polls")


def _retries(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "graph unavailable; retrying"]


@pytest.mark.slow
async def test_503_shorter_than_the_grace_keeps_the_account_connected(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph answers 503 (no Retry-After) for longer than msgraph retries: the relay waits
    and tries again, the account stays connected without a connectError, and the mail that
    arrived meanwhile is reported once when Graph answers again."""
    client = await _polled_shared(start, http, sandbox)

    with structlog.testing.capture_logs() as logs:
        await _fault(http, sandbox, kind="unavailable", mailbox=SHARED, requests=SDK_TRIES + 1)
        for n in range(2):
            await deliver(http, sandbox, mailbox=SHARED, subject=f"during the outage {n}")
        found = await wait_events(client, "shared", "messageNew", count=2, within=60)
        await _polled_again(http, sandbox)

    assert sorted(e["data"]["subject"] for e in found) == [
        "during the outage 0",
        "during the outage 1",
    ]
    assert len(await stored_events(client, "shared", "messageNew")) == 2
    assert await stored_events(client, "shared", "connectError") == []
    assert await wait_state(client, "shared", "connected") == "connected"
    statuses = [r["status"] for r in await _requests(http, sandbox)]
    assert statuses.count(503) == SDK_TRIES + 1
    assert _retries(logs)
    assert {e["account"] for e in _retries(logs)} == {"shared"}
    assert not [e for e in logs if e["event"] == "graph account failed"]
    assert [e["account"] for e in logs if e["event"] == "graph answers again"] == ["shared"]


async def test_outage_past_the_grace_is_one_connect_error_then_connected(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """A subscribed mailbox whose Graph keeps answering 503 past the (shortened) grace:
    exactly one connectError however many tries fail, the account in connectError; when
    Graph answers again it is connected, and delta reports what arrived meanwhile once."""
    client = await start(outage_grace=1.0)
    await _graph_main(client, http, sandbox)
    await wait_state(client, "my-account", "connected")
    assert (await _graph_state(client, "my-account"))["mode"] == "subscription"

    with structlog.testing.capture_logs() as logs:
        fault = await _fault(http, sandbox, kind="unavailable", mailbox=MAIN, retryAfter=1)
        for n in range(2):
            # Notified at once; the catch-up that follows meets the outage.
            await deliver(http, sandbox, subject=f"during the outage {n}")
        (refused,) = await wait_events(client, "my-account", "connectError", within=60)

        async def failed_on() -> bool:
            # Two more of the relay's tries after the connectError, msgraph's included.
            return await _hits(http, sandbox, fault) >= 3 * SDK_TRIES

        await wait_until(failed_on, "two more failed tries", within=60)
        assert await wait_state(client, "my-account", "connectError") == "connectError"
        await admin(http, sandbox, "DELETE", f"faults/{fault}")
        await wait_state(client, "my-account", "connected")
        found = await wait_events(client, "my-account", "messageNew", count=2)
        await deliver(http, sandbox, subject="after the outage")
        await wait_events(client, "my-account", "messageNew", count=3)

    assert refused["data"]["statusCode"] == 503
    assert refused["data"]["serverResponseCode"] == "serviceNotAvailable"
    assert len(await stored_events(client, "my-account", "connectError")) == 1
    assert sorted(e["data"]["subject"] for e in found[:2]) == [
        "during the outage 0",
        "during the outage 1",
    ]
    assert len(await stored_events(client, "my-account", "messageNew")) == 3
    assert len(_retries(logs)) >= 3
    outlasted = [e for e in logs if e["event"] == "graph outage outlasted the grace period"]
    assert [e["account"] for e in outlasted] == ["my-account"]


async def test_retry_after_of_a_504_is_waited_before_the_next_try(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph's gateway answers 504 with Retry-After for longer than msgraph retries: no
    request reaches the mailbox sooner than Retry-After after a 504, and the mail that
    arrived meanwhile is reported once."""
    client = await _polled_shared(start, http, sandbox)

    with structlog.testing.capture_logs() as logs:
        await _fault(
            http,
            sandbox,
            kind="gatewayTimeout",
            mailbox=SHARED,
            retryAfter=2,
            requests=SDK_TRIES + 1,
        )
        await deliver(http, sandbox, mailbox=SHARED, subject="behind the gateway")
        (new,) = await wait_events(client, "shared", "messageNew", within=60)
        await _polled_again(http, sandbox)

    assert new["data"]["subject"] == "behind the gateway"
    assert len(await stored_events(client, "shared", "messageNew")) == 1
    recorded = await _requests(http, sandbox)
    hit = [n for n, r in enumerate(recorded) if r["fault"] == "gatewayTimeout"]
    assert len(hit) == SDK_TRIES + 1
    gaps = [recorded[n + 1]["time"] - recorded[n]["time"] for n in hit]
    assert min(gaps) >= 2 - SLACK, gaps
    assert {(e["account"], e["retry_after"]) for e in _retries(logs)} == {("shared", 2)}
    assert await stored_events(client, "shared", "connectError") == []


async def test_hung_request_times_out_and_is_retried(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph takes a request and never answers: the request times out
    (``graph.request_timeout``), is tried again, and the mail is reported once without a
    connectError."""
    client = await _polled_shared(start, http, sandbox, request_timeout=1.0)

    with structlog.testing.capture_logs() as logs:
        fault = await _fault(http, sandbox, kind="hang", mailbox=SHARED, requests=2)
        await deliver(http, sandbox, mailbox=SHARED, subject="after the hang")
        (new,) = await wait_events(client, "shared", "messageNew", within=60)
        await _polled_again(http, sandbox)

    assert new["data"]["subject"] == "after the hang"
    assert await _hits(http, sandbox, fault) == 2
    assert len(await stored_events(client, "shared", "messageNew")) == 1
    assert await stored_events(client, "shared", "connectError") == []
    assert [e["attempt"] for e in _retries(logs)] == [1, 2]
    assert all("Timeout" in e["error"] for e in _retries(logs))


async def test_reset_connection_is_retried(
    start: Start,  # noqa: F811 (the fixture imported above)
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    """Graph's connection is reset mid-request, three times in a row: each time the request
    is tried again, and the mail is reported once without a connectError."""
    client = await _polled_shared(start, http, sandbox)

    with structlog.testing.capture_logs() as logs:
        await _fault(http, sandbox, kind="reset", mailbox=SHARED, requests=3)
        await deliver(http, sandbox, mailbox=SHARED, subject="after the resets")
        (new,) = await wait_events(client, "shared", "messageNew", within=60)
        await _polled_again(http, sandbox)

    assert new["data"]["subject"] == "after the resets"
    assert len(await stored_events(client, "shared", "messageNew")) == 1
    assert await stored_events(client, "shared", "connectError") == []
    recorded = await _requests(http, sandbox)
    assert [r["status"] for r in recorded if r["fault"] == "reset"] == [None] * 3
    assert [e["attempt"] for e in _retries(logs)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("attempt", "retry_after", "jitter", "expected"),
    [
        # Backoff: retry_min doubling per attempt, scaled by the jitter, at most retry_max.
        (1, None, 1.0, 1.0),
        (2, None, 1.0, 2.0),
        (4, None, 1.0, 8.0),
        (3, None, 0.8, 3.2),
        (3, None, 1.2, 4.8),
        (20, None, 1.2, 300.0),
        (10_000, None, 1.0, 300.0),
        # Graph's Retry-After, as it is (no jitter), at most retry_max.
        (1, 7.0, 1.2, 7.0),
        (9, 7.0, 0.8, 7.0),
        (1, 3600.0, 1.0, 300.0),
        (1, 0.0, 1.0, 0.0),
    ],
)
def test_delay_backs_off_or_follows_retry_after(
    attempt: int, retry_after: float | None, jitter: float, expected: float
) -> None:
    """The wait after a failed try: exponential backoff with jitter, or Retry-After; both
    capped at retry_max."""
    assert delay(attempt, retry_after, low=1.0, high=300.0, jitter=jitter) == pytest.approx(
        expected
    )


def _bad_certificate() -> httpx.ConnectError:
    try:
        raise ssl.SSLCertVerificationError("certificate verify failed")
    except ssl.SSLCertVerificationError as exc:
        try:
            raise httpx.ConnectError("certificate verify failed") from exc
        except httpx.ConnectError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (APIError("Service Unavailable", 503), True),
        (APIError("Gateway Timeout", 504), True),
        (httpx.ReadTimeout("timed out"), True),
        (httpx.ConnectTimeout("timed out"), True),
        (httpx.ReadError("connection reset by peer"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
        (httpx.ConnectError("connection refused"), True),
        # Not outages: throttling (its own handling), refusals, our own mistakes.
        (APIError("Too Many Requests", 429), False),
        (APIError("Unauthorized", 401), False),
        (APIError("Internal Server Error", 500), False),
        (APIError("Forbidden", 403), False),
        (_bad_certificate(), False),
        (ValueError("delta page without nextLink or deltaLink"), False),
    ],
)
def test_transient_is_graphs_try_later(exc: BaseException, expected: bool) -> None:
    """503, 504, timeouts and cut or refused connections are waited out; everything else
    (429, 4xx, 500, a certificate that does not verify) is not an outage."""
    assert transient(exc) is expected
