"""Throttling on demand (429 with Retry-After) and the record of each mailbox's requests."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from relay.sandbox.graph.throttling import LOG_SIZE, RecordedRequest, Throttling
from relay.sandbox.server import RunningSandbox

from .graph_helpers import MAIN, SHARED, Graph, Receiver, admin, mint, subscription_body


async def _throttle(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, mailbox: str, **body: Any
) -> Any:
    return await admin(http, sandbox, "POST", f"mailboxes/{mailbox}/throttle", body)


async def test_throttled_requests_get_429_with_retry_after(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """The next N mailbox requests get 429, Retry-After and ApplicationThrottled in Graph's
    error shape; me/... and users/{upn}/... of the mailbox count alike; then it answers."""
    made = await _throttle(http, sandbox, MAIN.upper(), requests=2, retryAfter=7)

    first, headers, body = await graph.exchange("GET", "me/mailFolders/inbox/messages")
    second, _, other = await graph.exchange("GET", f"users/{MAIN}/messages")
    third, after, _ = await graph.exchange("GET", "me/mailFolders/inbox/messages")

    assert made == {"mailbox": MAIN, "requests": 2, "retryAfter": 7, "code": "ApplicationThrottled"}
    assert (first, second, third) == (429, 429, 200)
    assert headers["Retry-After"] == "7"
    assert "Retry-After" not in after
    assert body["error"]["code"] == other["error"]["code"] == "ApplicationThrottled"
    assert body["error"]["message"] == "Application is over its MailboxConcurrency limit."
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    assert body["error"]["innerError"]["request-id"] == headers["request-id"]
    assert "Date" in headers


async def test_only_that_mailboxs_requests_are_throttled(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Another mailbox, the user's directory entry and subscriptions are not throttled, nor
    counted; a bad token is still 401 and does not use up the throttle."""
    await _throttle(http, sandbox, SHARED, requests=1, retryAfter=3, code="TooManyRequests")

    own = await graph.call("GET", "me/mailFolders")
    user = await graph.call("GET", f"users/{SHARED}")
    sub = await graph.call(
        "POST", "subscriptions", subscription_body(sandbox, receiver.url, resource="me/messages")
    )
    refused = await graph.call("GET", f"users/{SHARED}/messages", token="not.a.token")
    throttled = await graph.call("GET", f"users/{SHARED}/messages")
    then = await graph.call("GET", f"users/{SHARED}/messages")

    assert [s for s, _ in (own, user, sub, refused, throttled, then)] == [
        200,
        200,
        201,
        401,
        429,
        200,
    ]
    assert throttled[1]["error"]["code"] == "TooManyRequests"
    assert throttled[1]["error"]["message"] == "Please retry again later."


async def test_requests_are_recorded_with_time_and_status(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """GET .../requests lists each mailbox request once, oldest first, with its sandbox-clock
    arrival time, method, path (no query), status, and the Retry-After of throttled ones."""
    await graph.ok("GET", f"users/{SHARED}/mailFolders/inbox/messages?$top=1")
    await _throttle(http, sandbox, SHARED, requests=1, retryAfter=4, code="MailboxConcurrency")
    await graph.call("POST", f"users/{SHARED}/mailFolders", {"displayName": "Orders"})
    await graph.call("GET", f"users/{SHARED}/mailFolders/nope/messages")
    await admin(http, sandbox, "POST", "clock", {"advanceSeconds": 600})
    await graph.ok("GET", f"users/{SHARED}/mailFolders/inbox/messages/delta()")

    recorded = await admin(http, sandbox, "GET", f"mailboxes/{SHARED}/requests")
    mine = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/requests")

    assert [(r["method"], r["path"], r["status"], r["throttled"]) for r in recorded] == [
        ("GET", f"/v1.0/users/{SHARED}/mailFolders/inbox/messages", 200, False),
        ("POST", f"/v1.0/users/{SHARED}/mailFolders", 429, True),
        ("GET", f"/v1.0/users/{SHARED}/mailFolders/nope/messages", 400, False),
        ("GET", f"/v1.0/users/{SHARED}/mailFolders/inbox/messages/delta()", 200, False),
    ]
    assert [r["retryAfter"] for r in recorded] == [None, 4, None, None]
    times = [r["time"] for r in recorded]
    assert times == sorted(times)
    assert times[-1] - times[-2] >= 600
    assert abs(times[-1] - sandbox.state.now()) < 5
    assert mine == []


def test_request_log_keeps_the_last_thousand() -> None:
    """A mailbox's log keeps the newest LOG_SIZE requests, oldest first."""
    throttling = Throttling()
    for n in range(LOG_SIZE + 5):
        throttling.record(MAIN, RecordedRequest(float(n), "GET", f"/v1.0/me/{n}", 200))

    kept = throttling.requests(MAIN)

    assert len(kept) == LOG_SIZE == 1000
    assert (kept[0].time, kept[-1].time) == (5.0, float(LOG_SIZE + 4))
    assert throttling.requests(SHARED) == []


async def test_throttle_is_replaced_and_cleared(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A second POST replaces the pending throttle; DELETE stops it and says what was left."""
    await _throttle(http, sandbox, MAIN, requests=5, retryAfter=1)
    await _throttle(http, sandbox, MAIN, requests=3, retryAfter=9)
    status, headers, _ = await graph.exchange("GET", "me/mailFolders")

    cleared = await admin(http, sandbox, "DELETE", f"mailboxes/{MAIN}/throttle")
    again = await admin(http, sandbox, "DELETE", f"mailboxes/{MAIN}/throttle")

    assert (status, headers["Retry-After"]) == (429, "9")
    assert cleared == {"mailbox": MAIN, "requestsLeft": 2}
    assert again == {"mailbox": MAIN, "requestsLeft": 0}
    assert (await graph.call("GET", "me/mailFolders"))[0] == 200


THROTTLE = f"mailboxes/{MAIN}/throttle"
NOBODY = "mailboxes/nobody@example.com"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", THROTTLE, {"retryAfter": 2}, 400, "requests"),
        ("POST", THROTTLE, {"requests": 0, "retryAfter": 2}, 400, "requests"),
        ("POST", THROTTLE, {"requests": "3", "retryAfter": 2}, 400, "requests"),
        ("POST", THROTTLE, {"requests": True, "retryAfter": 2}, 400, "requests"),
        ("POST", THROTTLE, {"requests": 2.5, "retryAfter": 2}, 400, "requests"),
        ("POST", THROTTLE, {"requests": 3}, 400, "retryAfter"),
        ("POST", THROTTLE, {"requests": 3, "retryAfter": 0}, 400, "retryAfter"),
        ("POST", THROTTLE, {"requests": 3, "retryAfter": 1.5}, 400, "retryAfter"),
        ("POST", THROTTLE, {"requests": 3, "retryAfter": "2"}, 400, "retryAfter"),
        ("POST", THROTTLE, {"requests": 3, "retryAfter": 2, "code": "SlowDown"}, 400, "code"),
        ("POST", THROTTLE, [3, 2], 400, "body"),
        ("POST", f"{NOBODY}/throttle", {"requests": 1, "retryAfter": 1}, 404, "mailbox"),
        ("DELETE", f"{NOBODY}/throttle", None, 404, "mailbox"),
        ("GET", f"{NOBODY}/requests", None, 404, "mailbox"),
    ],
)
async def test_bad_throttle_input_is_refused(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str,
) -> None:
    """Bad throttle input is a 4xx naming the field, and throttles nothing."""
    async with http.request(method, f"{sandbox.url}/sandbox/{path}", json=body) as response:
        got = response.status
        error = await response.json()

    assert (got, error["field"]) == (status, field)
    assert sandbox.state.throttling.pending == {}
    graph = Graph(http, sandbox, mint(sandbox))
    assert (await graph.call("GET", "me/mailFolders"))[0] == 200
