"""``POST /v1/webhooks/{id}/test``: the answer is the outcome of that call's own delivery."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from relay.api.keys import STORE, WORKER
from relay.config import Settings
from relay.store import deliveries as queue
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


async def _known_route(client: TestClient, rx: Receiver) -> str:
    """A route the node's worker has loaded (it attempts test deliveries to it itself)."""
    route = await _route(client, rx)
    worker = client.app[WORKER]
    async with asyncio.timeout(10):
        while True:
            with worker.slot(route) as held:  # taken and given back
                if held is not None:
                    return route
            await asyncio.sleep(0.05)


async def test_attempted_by_this_node_without_a_claim_and_answered_as_recorded(
    make_client: MakeClient, settings: Settings
) -> None:
    """With a slot free, the delivery is queued already taken in the transaction that
    stores its event (the claim loop takes nothing), its body is the payload stored, and
    the answer is what the store then holds."""
    # No polling: the claim loop runs only when something wakes it.
    client = await make_client(loopback_settings(settings, poll_interval=30.0))
    worker = client.app[WORKER]
    await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
    async with Receiver(secret=WHSEC, service_secret=SERVICE_SECRET, default_status=202) as rx:
        route = await _known_route(client, rx)
        # The claim that followed loading the route is over once one call was answered.
        outs = [await call(client, "POST", f"/v1/webhooks/{route}/test")]
        claims = worker._claims
        outs += [await call(client, "POST", f"/v1/webhooks/{route}/test") for _ in range(3)]
        assert worker._claims == claims
    accepted = rx.accepted()
    assert [d.id for d in accepted] == [o["eventId"] for o in outs]
    for out, delivery in zip(outs, accepted, strict=True):
        async with client.app[STORE].read() as conn:
            stored = await queue.latest_outcome(conn, route, out["eventId"])
            row = await queue.get(conn, out["deliveryId"])
            bodies = await queue.payloads(conn, [out["eventId"]])
        assert delivery.body.decode() == bodies[out["eventId"]].payload
        assert stored is not None
        assert row is not None
        assert (out["deliveryId"], out["status"], out["statusCode"]) == (
            stored["seq"],
            stored["status"],
            stored["status_code"],
        )
        assert (row["status"], row["attempts"], row["claimed_by"]) == ("delivered", 1, None)


async def test_without_a_free_slot_the_delivery_is_queued_for_the_claim_loop(
    make_client: MakeClient, settings: Settings
) -> None:
    """The route's one slot is held by a slow test delivery: a second test delivery to it
    is queued as any other, claimed once the slot is free, and answered with its own
    outcome."""
    client = await make_client(loopback_settings(settings, route_concurrency=1, poll_interval=30.0))
    worker = client.app[WORKER]
    await call(client, "POST", "/v1/settings", {"serviceSecret": SERVICE_SECRET})
    async with Receiver(secret=WHSEC, service_secret=SERVICE_SECRET) as rx:
        route = await _known_route(client, rx)
        rx.respond(slow(1.0, 201), 202)
        first = asyncio.create_task(call(client, "POST", f"/v1/webhooks/{route}/test"))
        await rx.wait_for_requests(1)
        claims = worker._claims
        second = await call(client, "POST", f"/v1/webhooks/{route}/test")
        assert worker._claims > claims
        assert (await first)["statusCode"] == 201
    assert (second["status"], second["statusCode"]) == ("delivered", 202)
    assert [d.id for d in rx.accepted()][1] == second["eventId"]


async def test_unknown_or_disabled_route_is_refused_and_nothing_is_queued(
    make_client: MakeClient, settings: Settings
) -> None:
    """An unknown route is a 404 and a disabled one a 409, both naming ``id``; neither call
    stores an event or queues a delivery."""
    client = await make_client(loopback_settings(settings))
    async with Receiver(secret=WHSEC) as rx:
        route = await _route(client, rx)
        await call(client, "PUT", f"/v1/webhooks/{route}", {"enabled": False})
        missing = await call(client, "POST", "/v1/webhooks/no-such-route/test", status=404)
        disabled = await call(client, "POST", f"/v1/webhooks/{route}/test", status=409)
        assert missing["field"] == disabled["field"] == "id"
        assert "disabled" in disabled["message"]
        async with client.app[STORE].read() as conn:
            assert await queue.depth(conn) == {
                "pending": 0,
                "inflight": 0,
                "failed": 0,
                "delivered": 0,
            }
        assert rx.requests == []
