"""End-to-end delivery: store -> worker -> signed POST -> a receiver that verifies it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import pytest
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.api.keys import WORKER
from relay.config import Settings
from relay.store import webhook_routes as routes_store
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.receiver import Receiver, redirect, reset, slow, status
from tests.webhooks.conftest import SERVICE_SECRET, Setup, loopback_settings, make_setup


async def _settled(setup: Setup, n: int) -> list[dict[str, object]]:
    """Wait until ``n`` deliveries are no longer pending or in flight."""
    async with asyncio.timeout(10):
        while True:
            rows = await setup.deliveries()
            done = [r for r in rows if r["status"] in ("delivered", "failed")]
            if len(done) >= n:
                return rows
            await asyncio.sleep(0.05)


async def test_happy_path_signed_and_logged(hook: Setup) -> None:
    """Each event arrives once, verified (Standard Webhooks and X-EE-Wh-Signature)."""
    ids = await hook.emit(3)
    await hook.rx.wait_for(3)
    assert sorted(hook.rx.ids()) == sorted(ids)
    first = hook.rx.accepted()[0]
    assert first.standard_ok
    assert first.ee_ok
    assert first.headers["x-ee-wh-attempts-made"] == "1"
    assert first.headers["x-ee-wh-event-id"] == first.id
    assert first.headers["user-agent"].startswith("mailrelay/")
    assert first.headers["x-custom"] == "yes"
    envelope = first.json()
    assert envelope["event"] == "messageNew"
    assert envelope["serviceUrl"] == "https://relay.example.com"
    assert envelope["path"] == "INBOX"
    rows = await _settled(hook, 3)
    assert {r["status"] for r in rows} == {"delivered"}
    assert rows[0]["attemptLog"][0]["statusCode"] == 204


async def test_a_lone_outcome_is_written_at_once(
    hook: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no other attempt running, nothing would join its write: the outcome is recorded
    without waiting out the window in which outcomes gather (here far beyond the test)."""
    monkeypatch.setattr("relay.webhooks.worker._FLUSH_WINDOW", 3600.0)
    await hook.emit(1)
    rows = await _settled(hook, 1)
    assert [r["status"] for r in rows] == ["delivered"]


async def test_500_then_success_keeps_id(hook: Setup) -> None:
    """A 500 is retried with the same webhook-id and a higher attempt count."""
    hook.rx.respond(500)
    (event_id,) = await hook.emit()
    await hook.rx.wait_for(1)
    assert hook.rx.count(event_id) == 2
    assert hook.rx.accepted()[0].headers["x-ee-wh-attempts-made"] == "2"
    (row,) = await _settled(hook, 1)
    assert [a["statusCode"] for a in row["attemptLog"]] == [500, 204]


async def test_429_retry_after_honoured(hook: Setup) -> None:
    """429 with Retry-After: the next attempt starts no earlier than asked."""
    hook.rx.respond(status(429, retry_after=1))
    await hook.emit()
    await hook.rx.wait_for(1)
    (row,) = await _settled(hook, 1)
    first, second = row["attemptLog"]
    assert (first["statusCode"], second["statusCode"]) == (429, 204)
    gap = datetime.fromisoformat(second["started"]) - datetime.fromisoformat(first["started"])
    assert gap.total_seconds() >= 1.0


async def test_410_disables_route_and_keeps_queue(hook: Setup) -> None:
    """410 Gone disables the route; later events wait in the queue instead of being lost."""
    hook.rx.respond(410)
    await hook.emit()
    (row,) = await _settled(hook, 1)
    assert row["status"] == "failed"
    route = await call(hook.client, "GET", f"/v1/webhooks/{hook.route['id']}")
    assert route["enabled"] is False
    assert "410" in route["disabledReason"]
    (later,) = await hook.emit()
    await asyncio.sleep(0.3)
    assert hook.rx.count(later) == 0
    await call(hook.client, "PUT", f"/v1/webhooks/{hook.route['id']}", {"enabled": True})
    await hook.rx.wait_for(1)
    assert hook.rx.ids() == [later]


async def test_redirect_not_followed(hook: Setup) -> None:
    """A 3xx is a failed attempt that names the Location; the Location is never requested."""
    hook.rx.respond(redirect("/moved", 301))
    await hook.emit()
    await hook.rx.wait_for(1)
    assert [r.path for r in hook.rx.requests] == ["/hook", "/hook"]
    (row,) = await _settled(hook, 1)
    assert f"redirect 301 to {hook.rx.base_url}/moved not followed" in row["attemptLog"][0]["error"]


async def test_connection_reset_retried(hook: Setup) -> None:
    """A reset connection is a failed attempt with the error recorded, then retried."""
    hook.rx.respond(reset())
    await hook.emit()
    await hook.rx.wait_for(1)
    (row,) = await _settled(hook, 1)
    assert row["attemptLog"][0].get("statusCode") is None
    assert row["attemptLog"][0]["error"]


@pytest.fixture
async def quick_timeout(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    async for setup in make_setup(
        make_client, settings, {"retrySchedule": [0, 0.1]}, timeout=0.5, lease=5.0
    ):
        yield setup


async def test_slow_receiver_times_out(quick_timeout: Setup) -> None:
    """An answer slower than the timeout is a failed attempt; the retry succeeds."""
    quick_timeout.rx.respond(slow(3))
    await quick_timeout.emit()
    await quick_timeout.rx.wait_for(1, timeout=10)
    (row,) = await _settled(quick_timeout, 1)
    assert "timed out" in row["attemptLog"][0]["error"]
    assert row["status"] == "delivered"


async def test_last_attempt_fails_and_stays_visible(hook: Setup) -> None:
    """After the schedule runs out the delivery is failed, with every attempt in the log."""
    hook.rx.respond(500, 500, 500, 500)
    await hook.emit()
    (row,) = await _settled(hook, 1)
    assert row["status"] == "failed"
    assert [a["statusCode"] for a in row["attemptLog"]] == [500, 500, 500, 500]
    failed = await hook.deliveries("failed")
    assert len(failed) == 1


async def test_manual_retry_and_recover(hook: Setup) -> None:
    """A failed delivery can be retried by id, and a route's failures re-queued since a time."""
    hook.rx.respond(*([500] * 8))
    await hook.emit(2)
    rows = await _settled(hook, 2)
    assert {r["status"] for r in rows} == {"failed"}
    await call(hook.client, "POST", f"/v1/deliveries/{rows[0]['id']}/retry")
    await hook.rx.wait_for(1)
    out = await call(
        hook.client,
        "POST",
        f"/v1/webhooks/{hook.route['id']}/recover",
        {"since": "2000-01-01T00:00:00Z"},
    )
    assert out == {"requeued": 1}
    await hook.rx.wait_for(2)
    assert len(set(hook.rx.ids())) == 2


async def test_recover_a_time_range(hook: Setup) -> None:
    """``until`` bounds recovery: a failure created at or after it stays failed."""
    hook.rx.respond(*([500] * 8))
    await hook.emit()
    await _settled(hook, 1)
    await hook.emit()
    rows = await _settled(hook, 2)
    assert {r["status"] for r in rows} == {"failed"}
    first, second = sorted(rows, key=lambda r: str(r["created"]))
    assert first["created"] < second["created"]
    out = await call(
        hook.client,
        "POST",
        f"/v1/webhooks/{hook.route['id']}/recover",
        {"since": "2000-01-01T00:00:00Z", "until": second["created"]},
    )
    assert out == {"requeued": 1}
    await hook.rx.wait_for(1)
    after = {r["id"]: r["status"] for r in await _settled(hook, 2)}
    assert after == {first["id"]: "delivered", second["id"]: "failed"}


async def test_test_endpoint_delivers_now(hook: Setup) -> None:
    """POST /test delivers a test event to that route and reports the attempt."""
    out = await call(hook.client, "POST", f"/v1/webhooks/{hook.route['id']}/test")
    assert out["status"] == "delivered"
    assert out["statusCode"] == 204
    assert hook.rx.accepted()[0].json()["event"] == "test"


async def test_rotation_signs_with_both_secrets(hook: Setup) -> None:
    """After rotation both the old and the new secret verify the same request."""
    old = hook.rx.secret
    rotated = await call(
        hook.client, "PUT", f"/v1/webhooks/{hook.route['id']}", {"rotateSecret": True}
    )
    hook.rx.secret = rotated["secret"]
    await hook.emit()
    await hook.rx.wait_for(1)
    delivery = hook.rx.accepted()[0]
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    from standardwebhooks import Webhook

    Webhook(old).verify(delivery.body, delivery.headers)


async def test_large_event_trimmed_not_dropped(hook: Setup) -> None:
    """An event over the size limit arrives trimmed, with the trimmed fields named."""
    await hook.emit(data={"html": "x" * 600_000, "subject": "big"})
    await hook.rx.wait_for(1)
    delivery = hook.rx.accepted()[0]
    assert len(delivery.body) <= 256 * 1024
    data = json.loads(delivery.body)["data"]
    assert data["subject"] == "big"
    assert data["trimmed"] == ["data.html"]


@pytest.fixture
async def fifo(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    route = {"ordering": "fifo", "retrySchedule": [0, 0.1, 0.1, 0.1]}
    async for setup in make_setup(make_client, settings, route):
        yield setup


async def test_fifo_delivers_in_order_through_failures(fifo: Setup) -> None:
    """A fifo route delivers one at a time in order, even when the head needs retries."""
    fifo.rx.respond(500, 500)
    ids = await fifo.emit(5)
    await fifo.rx.wait_for(5)
    assert fifo.rx.ids() == ids
    order = [r.id for r in fifo.rx.requests]
    assert order[:3] == [ids[0]] * 3


@pytest.fixture
async def ssrf_default(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    """A relay with the default SSRF policy (no loopback allowed)."""
    async for setup in make_setup(make_client, settings, {"retrySchedule": [0]}, allow_networks=()):
        yield setup


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost"])
async def test_ssrf_refused_by_default(ssrf_default: Setup, host: str) -> None:
    """Loopback targets (literal, IPv4-mapped, or a name resolving to it) are refused clearly."""
    url = ssrf_default.rx.url.replace("127.0.0.1", host)
    await call(ssrf_default.client, "PUT", f"/v1/webhooks/{ssrf_default.route['id']}", {"url": url})
    await ssrf_default.emit()
    (row,) = await _settled(ssrf_default, 1)
    assert row["status"] == "failed"
    error = row["attemptLog"][0]["error"]
    assert "is not allowed" in error
    assert "allow_networks" in error
    assert ssrf_default.rx.received == 0


@pytest.fixture
async def disabling(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    route = {"retrySchedule": [0, 0.3, 0.3]}
    async for setup in make_setup(make_client, settings, route, disable_after_days=0.1 / 86400):
        yield setup


async def test_route_failing_too_long_is_disabled(disabling: Setup) -> None:
    """A route that has only failed for longer than disable_after_days is disabled."""
    disabling.rx.respond(500, 500, 500)
    await disabling.emit()
    async with asyncio.timeout(10):
        while True:
            route = await call(disabling.client, "GET", f"/v1/webhooks/{disabling.route['id']}")
            if not route["enabled"]:
                break
            await asyncio.sleep(0.05)
    assert "disable_after_days" in route["disabledReason"]
    (row,) = await disabling.deliveries()
    assert row["status"] == "pending"  # kept, to be delivered once the route is enabled again


async def test_settings_custom_headers_reach_the_default_route(
    make_client: MakeClient, settings: Settings
) -> None:
    """EmailEngine's webhooksCustomHeaders are added to every webhook of the default route;
    reads show the names only; a header that signing sets is refused."""
    client = await make_client(loopback_settings(settings))
    async with Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET) as rx:
        out = await call(
            client,
            "POST",
            "/v1/settings",
            {
                "webhooks": rx.url,
                "serviceSecret": SERVICE_SECRET,
                "webhooksCustomHeaders": [{"key": "X-Tenant", "value": "contoso-secret-42"}],
            },
        )
        rx.secret = out["webhooksSecret"]
        await call(client, "POST", "/v1/webhooks/default/test", {})
        await rx.wait_for(1)
        (delivery,) = rx.accepted()
        assert delivery.headers["x-tenant"] == "contoso-secret-42"
        assert delivery.standard_ok
        read = await call(client, "GET", "/v1/settings?webhooksCustomHeaders=true")
        assert read == {"webhooksCustomHeaders": [{"key": "X-Tenant", "value": "[redacted]"}]}
        refused = await call(
            client,
            "POST",
            "/v1/settings",
            {"webhooksCustomHeaders": [{"key": "webhook-signature", "value": "forged"}]},
            status=400,
        )
        assert refused["field"] == "webhooksCustomHeaders"


@pytest.fixture
async def no_polling(make_client: MakeClient, settings: Settings) -> AsyncIterator[Setup]:
    # A poll far beyond the test: only commits and finished work may wake the worker.
    async for setup in make_setup(
        make_client, settings, poll_interval=3600.0, concurrency=16, batch_size=16
    ):
        yield setup


async def test_a_route_change_announced_during_a_route_read_is_read_again(
    no_polling: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route committed while the claim loop was reading the routes may be missing from
    that read: the loop reads them again instead of keeping what it read (with no poll, a
    new route stayed unknown to it and nothing was claimed for it)."""
    worker = no_polling.client.app[WORKER]
    original = routes_store.all_routes
    reads = 0
    read_again = asyncio.Event()

    async def read_then_change(conn: AsyncConnection) -> Sequence[RowMapping]:
        nonlocal reads
        task = asyncio.current_task()
        if task is None or task.get_name() != "webhooks.claim":  # not the periodic refresh
            return await original(conn)
        reads += 1
        rows = await original(conn)
        if reads == 1:
            worker.routes_changed()  # announced after this read began
        else:
            read_again.set()
        return rows

    monkeypatch.setattr(routes_store, "all_routes", read_then_change)
    worker.routes_changed()
    async with asyncio.timeout(10):
        await read_again.wait()


async def test_a_backlog_drains_without_waiting_for_the_poll(no_polling: Setup) -> None:
    """Ten times more deliveries than the worker takes at once, stored in one commit, all
    go out: each full claim makes the worker come back for more when slots free up."""
    ids = await no_polling.emit(160)
    await no_polling.rx.wait_for(160, timeout=60)
    assert set(no_polling.rx.ids()) == set(ids)
