"""Receivers that hang, dribble, flood or redirect: other routes go on, nothing is lost.

Each test points one route at a :class:`HostileFront` (tests/webhooks/hostile.py) in front of a
verifying receiver and a second route at a healthy receiver. When the fault is over, every
event has reached the receiver behind the front exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.receiver import Receiver
from tests.webhooks.conftest import Setup, make_setup
from tests.webhooks.hostile import (
    HostileFront,
    dribble_body,
    dribble_head,
    forward,
    hang,
    huge,
    plain,
    redirect,
)

# Seconds one attempt may take in these tests; the schedule retries quickly and long enough
# never to give up while a fault lasts.
TIMEOUT = 2.0
SCHEDULE = [0] + [0.2] * 29
FIFTY_MIB = 50 * 1024 * 1024


@dataclass
class Hostile:
    setup: Setup  # the route behind the front; setup.rx is the receiver behind it
    front: HostileFront
    healthy: Receiver  # a second route's receiver, on account "ok"

    async def emit(self, n: int, account: str) -> list[str]:
        return await self.setup.emit(n, account=account)

    async def deliveries(self) -> list[dict[str, Any]]:
        return await self.setup.deliveries()

    async def settled(self, n: int, deadline: float = 60.0) -> list[dict[str, Any]]:
        """The front route's log once ``n`` deliveries are delivered or failed."""
        async with asyncio.timeout(deadline):
            while True:
                rows = await self.deliveries()
                if sum(r["status"] in ("delivered", "failed") for r in rows) >= n:
                    return rows
                await asyncio.sleep(0.1)

    async def first_attempts(self, n: int, deadline: float = 30.0) -> list[dict[str, Any]]:
        """The first ``n`` recorded attempts of the front route."""
        async with asyncio.timeout(deadline):
            while True:
                attempts = [a for r in await self.deliveries() for a in r["attemptLog"]]
                if len(attempts) >= n:
                    return attempts
                await asyncio.sleep(0.1)


async def _hostile(
    make_client: MakeClient, settings: Settings, **webhooks: Any
) -> AsyncIterator[Hostile]:
    values: dict[str, Any] = {"timeout": TIMEOUT, "lease": 30.0, **webhooks}
    async with HostileFront() as front:
        route = {"url": front.url, "accounts": ["slow"], "retrySchedule": SCHEDULE}
        async for setup in make_setup(make_client, settings, route, **values):
            front.upstream = setup.rx.url
            async with Receiver(secret="whsec_" + "B" * 44) as healthy:
                created = await call(
                    setup.client,
                    "POST",
                    "/v1/webhooks",
                    {"url": healthy.url, "accounts": ["ok"]},
                    status=201,
                )
                healthy.secret = created["secret"]
                yield Hostile(setup, front, healthy)


@pytest.fixture
async def hostile(make_client: MakeClient, settings: Settings) -> AsyncIterator[Hostile]:
    """Four attempts per route at once, thirty-two on the node."""
    async for h in _hostile(
        make_client, settings, concurrency=32, batch_size=32, route_concurrency=4
    ):
        yield h


def _once_each(rx: Receiver, ids: list[str]) -> None:
    """Every id was accepted by ``rx`` exactly once, and nothing else was."""
    counts = Counter(rx.ids())
    assert set(counts) == set(ids)
    assert [i for i, n in counts.items() if n != 1] == []


async def test_hanging_receiver_does_not_hold_up_other_routes(hostile: Hostile) -> None:
    """A receiver that accepts and never answers, with 400 deliveries queued for it, holds
    only its route's four slots: a healthy route's events go out while it hangs. Its attempts
    end at the time limit and are retried; once it answers, each event arrives once."""
    hostile.front.default = hang()
    stuck = await hostile.emit(400, account="slow")
    await hostile.front.wait_open(4)
    fine = await hostile.emit(20, account="ok")
    await hostile.healthy.wait_for(20, timeout=30)
    _once_each(hostile.healthy, fine)
    # Delivered while the hanging route still hung, long before it got through its backlog.
    assert hostile.front.open > 0
    assert hostile.setup.rx.received == 0
    assert sum(r["attempts"] for r in await hostile.deliveries()) < 200
    timed_out = await hostile.first_attempts(1)
    assert timed_out[0]["error"] == f"timed out after {TIMEOUT:g} s"
    assert timed_out[0].get("statusCode") is None

    hostile.front.default = forward()
    await hostile.setup.rx.wait_for(400, timeout=120)
    _once_each(hostile.setup.rx, stuck)
    assert hostile.front.max_open <= 4  # the route's limit held all along
    rows = await hostile.settled(400)
    assert {r["status"] for r in rows} == {"delivered"}
    assert any(len(r["attemptLog"]) > 1 for r in rows)


@pytest.mark.parametrize("where", ["head", "body"])
async def test_dribbling_receiver_is_cut_off_at_the_time_limit(
    hostile: Hostile, where: str
) -> None:
    """A receiver that sends its status line and headers, or its body, at one byte a second
    never gets the attempt past the total time limit (each byte comes well within any
    per-read timeout), and other routes go on meanwhile. A dribbled head is a timed-out
    attempt, retried; a dribbled body after a 200 counts by its status: delivered."""
    hostile.front.default = dribble_head(1.0) if where == "head" else dribble_body(1.0)
    stuck = await hostile.emit(6, account="slow")
    await hostile.front.wait_open(4)
    fine = await hostile.emit(5, account="ok")
    await hostile.healthy.wait_for(5, timeout=30)
    _once_each(hostile.healthy, fine)
    assert hostile.front.open > 0

    attempts = await hostile.first_attempts(4)
    if where == "head":
        assert {a["error"] for a in attempts} == {f"timed out after {TIMEOUT:g} s"}
        assert hostile.setup.rx.received == 0
        hostile.front.default = forward()
    else:
        assert {a["statusCode"] for a in attempts} == {200}
        assert {a.get("error") for a in attempts} == {None}
        # What came of the body within the time limit, and no more than that.
        assert all(1 <= len(a["responseBody"]) <= 4 for a in attempts)
    await hostile.setup.rx.wait_for(6, timeout=60)
    _once_each(hostile.setup.rx, stuck)
    rows = await hostile.settled(6)
    assert {r["status"] for r in rows} == {"delivered"}


@pytest.mark.parametrize(
    ("framing", "code"),
    [("length", 200), ("close", 200), ("chunked", 200), ("chunked", 500)],
)
async def test_huge_answer_is_cut_off_after_a_kib(
    hostile: Hostile, framing: str, code: int
) -> None:
    """A 50 MiB answer (with Content-Length, ended by closing, or chunked) is read for its
    first KiB only: the relay closes the connection instead of draining it, so the receiver
    cannot push more than the sockets' buffers hold; the attempt counts by its status."""
    hostile.front.respond(huge(FIFTY_MIB, framing, code))
    (event_id,) = await hostile.emit(1, account="slow")
    await hostile.setup.rx.wait_for(1, timeout=30)
    _once_each(hostile.setup.rx, [event_id])
    (row,) = await hostile.settled(1)
    first = row["attemptLog"][0]
    assert first["statusCode"] == code
    assert 0 < len(first["responseBody"]) <= 1024
    assert first["responseBody"].startswith("0123456789abcdef")
    if code == 200:
        assert row["status"] == "delivered"
        assert len(row["attemptLog"]) == 1
    else:
        assert first["error"] == "HTTP 500"
        assert [a["statusCode"] for a in row["attemptLog"]] == [500, 204]
    (sent,) = hostile.front.sent
    async with asyncio.timeout(30):
        await sent.done.wait()
    assert sent.cut
    assert sent.body_bytes < FIFTY_MIB // 4


@pytest.mark.parametrize(
    ("code", "target"),
    [(301, "trap"), (302, "trap"), (307, "trap"), (308, "trap"), (307, "metadata")],
)
async def test_redirect_is_a_failed_attempt_never_followed(
    hostile: Hostile, code: int, target: str
) -> None:
    """A 3xx is a failed attempt whose log names the Location; nothing is sent there (a trap
    receiver, or the cloud metadata address the SSRF guard refuses); the retry delivers."""
    async with HostileFront(default=plain(404)) as trap:
        location = f"{trap.url}/trap" if target == "trap" else "http://169.254.169.254/latest/"
        hostile.front.respond(redirect(code, location))
        (event_id,) = await hostile.emit(1, account="slow")
        (row,) = await hostile.settled(1)
        first, *later = row["attemptLog"]
        assert first.get("statusCode") == code
        assert first["error"] == (
            f"redirect {code} to {location} not followed; point the route at the final URL"
        )
        assert [a["statusCode"] for a in later] == [204]
        assert row["status"] == "delivered"
        assert trap.requests == 0
    _once_each(hostile.setup.rx, [event_id])
