"""Graph outages on demand: 503, 504, a hang, a connection reset."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
import httpx
import pytest

from relay.sandbox.server import RunningSandbox
from tests.sources.imap.relay_support import wait_until

from .graph_helpers import MAIN, SHARED, Graph, Receiver, admin, mint, subscription_body


async def _fault(http: aiohttp.ClientSession, sandbox: RunningSandbox, **body: Any) -> Any:
    return await admin(http, sandbox, "POST", "faults", body)


async def test_unavailable_and_gateway_timeout_answer_as_graph(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """503 serviceNotAvailable (with Retry-After when asked) and 504 in Graph's error
    shape, for as many requests as asked, then normal answers; the log marks them."""
    made = await _fault(http, sandbox, kind="unavailable", retryAfter=7, requests=1)
    await _fault(http, sandbox, kind="gatewayTimeout", requests=1)

    first, headers, body = await graph.exchange("GET", "me/mailFolders/inbox/messages")
    second, plain, other = await graph.exchange("GET", f"users/{MAIN}/messages")
    third, _, _ = await graph.exchange("GET", "me/mailFolders/inbox/messages")
    recorded = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/requests")
    listed = await admin(http, sandbox, "GET", "faults")

    assert made == {
        "id": made["id"],
        "kind": "unavailable",
        "mailbox": None,
        "path": None,
        "retryAfter": 7,
        "requestsLeft": 1,
        "hits": 0,
    }
    assert (first, second, third) == (503, 504, 200)
    assert headers["Retry-After"] == "7"
    assert "Retry-After" not in plain
    assert body["error"]["code"] == "serviceNotAvailable"
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    assert other["error"]["code"] == "UnknownError"
    assert [(r["status"], r["fault"], r["retryAfter"], r["throttled"]) for r in recorded] == [
        (503, "unavailable", 7, False),
        (504, "gatewayTimeout", None, False),
        (200, None, None, False),
    ]
    assert [(f["kind"], f["requestsLeft"], f["hits"]) for f in listed] == [
        ("unavailable", 0, 1),
        ("gatewayTimeout", 0, 1),
    ]


async def test_fault_hits_only_its_mailbox_and_path(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A fault for one mailbox and path leaves other mailboxes and paths alone; one for
    /subscriptions hits the mailbox's subscription requests (create, renew, delete)."""
    await _fault(http, sandbox, kind="unavailable", mailbox=SHARED.upper(), path="Messages/Delta")
    subs = await _fault(http, sandbox, kind="gatewayTimeout", mailbox=MAIN, path="/subscriptions")

    delta = await graph.call("GET", f"users/{SHARED}/mailFolders/inbox/messages/delta()")
    listing = await graph.call("GET", f"users/{SHARED}/mailFolders/inbox/messages")
    own = await graph.call("GET", "me/mailFolders/inbox/messages/delta()")
    refused = await graph.call(
        "POST", "subscriptions", subscription_body(sandbox, receiver.url, resource="me/messages")
    )
    await admin(http, sandbox, "DELETE", f"faults/{subs['id']}")
    created = await graph.ok(
        "POST", "subscriptions", subscription_body(sandbox, receiver.url, resource="me/messages")
    )
    await _fault(http, sandbox, kind="unavailable", mailbox=MAIN, path="/subscriptions/")
    renew = await graph.call("PATCH", f"subscriptions/{created['id']}", {"x": 1})
    delete = await graph.call("DELETE", f"subscriptions/{created['id']}")
    cleared = await admin(http, sandbox, "DELETE", "faults")

    assert [s for s, _ in (delta, listing, own, refused, renew, delete)] == [
        503,
        200,
        200,
        504,
        503,
        503,
    ]
    assert cleared == {"removed": 2}
    assert (await graph.call("DELETE", f"subscriptions/{created['id']}"))[0] == 204


async def test_hang_holds_the_request_until_the_fault_is_removed(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A hung request gets no answer (the client times out) until the fault is removed;
    then a request it still holds is answered 504, and the next requests normally."""
    made = await _fault(http, sandbox, kind="hang", mailbox=MAIN)
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(sandbox.ca_path))
    url = f"{sandbox.url}/v1.0/me/mailFolders"
    headers = {"Authorization": f"Bearer {graph.token}"}
    async with httpx.AsyncClient(verify=context) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url, headers=headers, timeout=0.5)
        held = asyncio.create_task(client.get(url, headers=headers, timeout=30))

        async def held_too() -> bool:
            listed = await admin(http, sandbox, "GET", "faults")
            return int(listed[0]["hits"]) == 2

        await wait_until(held_too, "the second request held")
        ended = await admin(http, sandbox, "DELETE", f"faults/{made['id']}")
        answer = await held

    assert ended["hits"] == 2
    assert answer.status_code == 504
    assert (await graph.call("GET", "me/mailFolders"))[0] == 200


async def test_reset_cuts_the_connection(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """A reset request gets no answer at all, the connection is cut; the log lists it
    without a status, and the next request is answered."""
    await _fault(http, sandbox, kind="reset", mailbox=MAIN, requests=1)
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(sandbox.ca_path))
    headers = {"Authorization": f"Bearer {graph.token}"}
    async with httpx.AsyncClient(verify=context) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{sandbox.url}/v1.0/me/mailFolders", headers=headers, timeout=5)
        after = await client.get(f"{sandbox.url}/v1.0/me/mailFolders", headers=headers)
    recorded = await admin(http, sandbox, "GET", f"mailboxes/{MAIN}/requests")

    assert after.status_code == 200
    assert [(r["status"], r["fault"]) for r in recorded] == [(None, "reset"), (200, None)]


async def test_sandbox_stops_promptly_with_a_request_held(
    http: aiohttp.ClientSession, graph: Graph, sandbox: RunningSandbox
) -> None:
    """Stopping the sandbox answers what a hang holds instead of waiting for it."""
    await _fault(http, sandbox, kind="hang")
    held = asyncio.create_task(graph.call("GET", "me/mailFolders"))

    async def hit() -> bool:
        return bool(sandbox.state.faults.active["fault-1"].hits)

    await wait_until(hit, "the request held")
    async with asyncio.timeout(10):
        await sandbox.close()
        status, _ = await held

    assert status == 504


FAULTS = "faults"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", FAULTS, {}, 400, "kind"),
        ("POST", FAULTS, {"kind": "slow"}, 400, "kind"),
        ("POST", FAULTS, {"kind": 503}, 400, "kind"),
        ("POST", FAULTS, {"kind": "hang", "mailbox": "nobody@example.com"}, 404, "mailbox"),
        ("POST", FAULTS, {"kind": "hang", "mailbox": 7}, 400, "mailbox"),
        ("POST", FAULTS, {"kind": "hang", "path": ""}, 400, "path"),
        ("POST", FAULTS, {"kind": "hang", "path": "x" * 513}, 400, "path"),
        ("POST", FAULTS, {"kind": "unavailable", "retryAfter": 0}, 400, "retryAfter"),
        ("POST", FAULTS, {"kind": "unavailable", "retryAfter": "5"}, 400, "retryAfter"),
        ("POST", FAULTS, {"kind": "hang", "retryAfter": 5}, 400, "retryAfter"),
        ("POST", FAULTS, {"kind": "reset", "retryAfter": 5}, 400, "retryAfter"),
        ("POST", FAULTS, {"kind": "reset", "requests": 0}, 400, "requests"),
        ("POST", FAULTS, {"kind": "reset", "requests": True}, 400, "requests"),
        ("POST", FAULTS, ["hang"], 400, "body"),
        ("DELETE", f"{FAULTS}/fault-99", None, 404, "id"),
    ],
)
async def test_bad_fault_input_is_refused(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str,
) -> None:
    """Bad fault input is a 4xx naming the field, and switches nothing on."""
    async with http.request(method, f"{sandbox.url}/sandbox/{path}", json=body) as response:
        got = response.status
        error = await response.json()

    assert (got, error["field"]) == (status, field)
    assert sandbox.state.faults.active == {}
    graph = Graph(http, sandbox, mint(sandbox))
    assert (await graph.call("GET", "me/mailFolders"))[0] == 200
