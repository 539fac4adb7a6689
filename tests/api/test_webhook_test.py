"""``POST /v1/webhooks/{id}/test``: the answer is the outcome of that call's own delivery."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from relay.api.keys import WORKER
from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.receiver import Receiver, slow
from tests.webhooks.conftest import SERVICE_SECRET, loopback_settings

WHSEC = "whsec_" + "A" * 44


async def _route(client: TestClient, rx: Receiver) -> str:
    """A route to ``rx`` whose receiver verifies its secret."""
    created = await call(client, "POST", "/v1/webhooks", {"url": rx.url}, status=201)
    rx.secret = created["secret"]
    return str(created["id"])


async def test_concurrent_calls_each_get_their_own_outcome(
    make_client: MakeClient, settings: Settings
) -> None:
    """Two /test calls at once, to routes whose receivers answer 202 and 500, each report
    their own delivery's event and status code; no waiter stays registered."""
    client = await make_client(loopback_settings(settings))
    await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
    async with (
        Receiver(secret=WHSEC, service_secret=SERVICE_SECRET, default_status=202) as ok,
        Receiver(secret=WHSEC, service_secret=SERVICE_SECRET, default_status=500) as failing,
    ):
        ok_route, failing_route = await _route(client, ok), await _route(client, failing)
        ok_out, failing_out = await asyncio.gather(
            call(client, "POST", f"/v1/webhooks/{ok_route}/test"),
            call(client, "POST", f"/v1/webhooks/{failing_route}/test"),
        )
        assert (ok_out["status"], ok_out["statusCode"]) == ("delivered", 202)
        assert "error" not in ok_out
        assert (failing_out["status"], failing_out["statusCode"]) == ("pending", 500)
        assert [d.id for d in ok.requests] == [ok_out["eventId"]]
        assert failing.requests[0].id == failing_out["eventId"]
        assert ok_out["deliveryId"] != failing_out["deliveryId"]
    assert len(client.app[WORKER].outcome_waiters) == 0


async def test_receiver_silent_past_the_timeout_gives_the_timeout_answer(
    make_client: MakeClient, settings: Settings
) -> None:
    """While the attempt is in flight the call waits registered for its delivery (it does
    not poll); a receiver that does not answer within webhooks.timeout gives the timed-out
    outcome, and the waiter is gone afterwards."""
    client = await make_client(loopback_settings(settings, timeout=2.0))
    waiters = client.app[WORKER].outcome_waiters
    await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
    async with Receiver(secret=WHSEC, service_secret=SERVICE_SECRET) as rx:
        route = await _route(client, rx)
        rx.respond(slow(60))
        answer = asyncio.create_task(call(client, "POST", f"/v1/webhooks/{route}/test"))
        await rx.wait_for_requests(1)
        assert len(waiters) == 1
        out = await answer
    assert out["status"] == "pending"  # a retry is scheduled
    assert "statusCode" not in out
    assert out["error"] == "timed out after 2 s"
    assert out["eventId"] == rx.requests[0].id
    assert len(waiters) == 0


async def test_delivery_made_by_another_node_is_read_after_the_timeout(
    make_client: MakeClient, settings: Settings
) -> None:
    """On a node that does not deliver, nothing wakes the call: after webhooks.timeout + 2 s
    it reads the store once and reports what the node that delivered recorded."""
    delivering = await make_client(loopback_settings(settings))
    answering = await make_client(loopback_settings(settings, deliver=False, timeout=1.0))
    assert WORKER not in answering.app
    await call(answering, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
    async with Receiver(secret=WHSEC, service_secret=SERVICE_SECRET) as rx:
        route = await _route(answering, rx)
        out = await call(answering, "POST", f"/v1/webhooks/{route}/test")
    assert (out["status"], out["statusCode"]) == ("delivered", 204)
    assert [d.id for d in rx.accepted()] == [out["eventId"]]
    assert len(delivering.app[WORKER].outcome_waiters) == 0
