"""The verifying test receiver: signature checks, programmed failures, the process mode."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from relay.webhooks.signing import delivery_headers, new_route_secret
from tests.peers.receiver import Receiver, redirect, reset, slow, status
from tests.proc import free_port

SERVICE_SECRET = "service-secret-for-tests"
ROOT = Path(__file__).resolve().parents[2]

Send = Callable[..., Awaitable[aiohttp.ClientResponse]]


def signed(
    msg_id: str,
    body: bytes,
    secrets: tuple[str, ...],
    *,
    attempt: int = 1,
    service_secret: str = SERVICE_SECRET,
) -> dict[str, str]:
    return delivery_headers(
        msg_id=msg_id,
        timestamp=int(time.time()),
        body=body,
        route_secrets=secrets,
        service_secret=service_secret,
        attempt=attempt,
        user_agent="mailrelay/test",
        custom={},
    )


@pytest.fixture
def secret() -> str:
    return new_route_secret()


@pytest.fixture
async def rx(secret: str) -> AsyncIterator[Receiver]:
    """A receiver holding ``secret`` and the service secret."""
    async with Receiver(secret=secret, service_secret=SERVICE_SECRET) as receiver:
        yield receiver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def send(session: aiohttp.ClientSession, rx: Receiver, secret: str) -> Send:
    """POST one event to the receiver, signed with ``secret`` unless told otherwise."""

    async def post(
        msg_id: str = "evt-1",
        *,
        secrets: tuple[str, ...] | None = None,
        service_secret: str = SERVICE_SECRET,
        attempt: int = 1,
        path: str = "/hook",
    ) -> aiohttp.ClientResponse:
        body = json.dumps({"event": "messageNew", "data": {"id": msg_id}}).encode()
        headers = signed(
            msg_id, body, secrets or (secret,), attempt=attempt, service_secret=service_secret
        )
        async with session.post(
            rx.base_url + path, data=body, headers=headers, allow_redirects=False
        ) as resp:
            await resp.read()
            return resp

    return post


async def test_correct_signatures_accepted(rx: Receiver, send: Send) -> None:
    """A request signed with the route and service secrets is verified and recorded."""
    resp = await send("evt-1", attempt=2)
    assert resp.status == 204
    (delivery,) = rx.requests
    assert delivery.verified
    assert delivery.accepted
    assert (delivery.id, delivery.attempt, delivery.path) == ("evt-1", 2, "/hook")
    assert delivery.json() == {"event": "messageNew", "data": {"id": "evt-1"}}
    assert delivery.headers["content-type"] == "application/json"
    assert rx.ids() == ["evt-1"]


async def test_wrong_route_secret_not_verified(rx: Receiver, send: Send) -> None:
    """A request signed with another route secret is recorded as not verified."""
    await send("evt-1", secrets=(new_route_secret(),))
    (delivery,) = rx.requests
    assert not delivery.standard_ok
    assert delivery.ee_ok is True
    assert not delivery.verified
    assert not delivery.accepted
    assert rx.ids() == []
    assert rx.count("evt-1") == 1


async def test_wrong_service_secret_not_verified(rx: Receiver, send: Send) -> None:
    """The X-EE-Wh-Signature is checked on its own: a wrong service secret fails it."""
    await send("evt-1", service_secret="another-service-secret")
    (delivery,) = rx.requests
    assert delivery.standard_ok
    assert delivery.ee_ok is False
    assert not delivery.verified


async def test_unsigned_request_not_verified(rx: Receiver, session: aiohttp.ClientSession) -> None:
    """A request without signature headers is recorded, unverified, and does not crash."""
    async with session.post(rx.url, data=b"\xff\xfe not json") as resp:
        assert resp.status == 204
    (delivery,) = rx.requests
    assert (delivery.id, delivery.attempt, delivery.verified) == (None, None, False)


async def test_secret_rotation(rx: Receiver, send: Send, secret: str) -> None:
    """After the receiver switches secrets, only requests signed with the new one verify."""
    new = new_route_secret()
    rx.secret = new
    await send("old-only", secrets=(secret,))
    await send("both", secrets=(new, secret))
    await send("new-only", secrets=(new,))
    assert [d.verified for d in rx.requests] == [False, True, True]
    assert rx.ids() == ["both", "new-only"]


async def test_failure_modes_as_programmed(rx: Receiver, send: Send) -> None:
    """Queued behaviours answer the next requests in order, then the default 204."""
    rx.respond(
        500,
        410,
        redirect("/moved"),
        status(429, retry_after=7),
        status(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
    )
    answers = [await send("evt-1", attempt=n) for n in range(1, 7)]
    assert [r.status for r in answers] == [500, 410, 301, 429, 503, 204]
    assert answers[2].headers["Location"] == rx.base_url + "/moved"
    assert answers[3].headers["Retry-After"] == "7"
    assert answers[4].headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert [d.status for d in rx.requests] == [500, 410, 301, 429, 503, 204]
    assert all(d.verified for d in rx.requests)
    assert [d.attempt for d in rx.requests] == [1, 2, 3, 4, 5, 6]
    assert rx.count("evt-1") == 6
    assert rx.ids() == ["evt-1"]  # only the 204 was a delivery


async def test_redirect_target_is_on_the_receiver(rx: Receiver, send: Send) -> None:
    """Following the Location (which senders must not do) would land on this receiver."""
    rx.respond(redirect("/elsewhere"))
    await send("evt-1")
    await send("evt-1", path="/elsewhere")
    assert [d.path for d in rx.requests] == ["/hook", "/elsewhere"]


async def test_slow_answer(rx: Receiver, send: Send, session: aiohttp.ClientSession) -> None:
    """slow() holds the answer, so a client with a shorter timeout gives up."""
    rx.respond(slow(0.3), slow(5))
    started = time.monotonic()
    assert (await send("evt-1")).status == 204
    assert time.monotonic() - started >= 0.3
    with pytest.raises(TimeoutError):
        async with session.post(rx.url, data=b"{}", timeout=aiohttp.ClientTimeout(total=0.2)):
            pass


async def test_reset_tears_the_connection_down(rx: Receiver, send: Send) -> None:
    """reset() closes the connection without an answer; the next request is answered."""
    rx.respond(reset())
    with pytest.raises(aiohttp.ClientConnectionError):
        await send("evt-1")
    assert (await send("evt-1", attempt=2)).status == 204
    assert [d.status for d in rx.requests] == [0, 204]
    assert rx.count("evt-1") == 2


async def test_wait_for(rx: Receiver, send: Send) -> None:
    """wait_for returns once n deliveries were accepted and times out listing what came."""
    rx.respond(500)
    waiter = asyncio.create_task(rx.wait_for(2, timeout=5))
    await send("a")
    await send("a", attempt=2)
    assert not waiter.done()
    await send("b")
    await waiter
    assert rx.ids() == ["a", "b"]
    with pytest.raises(TimeoutError, match="'accepted': 2"):
        await rx.wait_for(3, timeout=0.1)


async def test_stop_releases_slow_handlers(secret: str) -> None:
    """Stopping the receiver does not wait for a long slow() answer."""
    rx = Receiver(secret=secret)
    await rx.start()
    rx.respond(slow(60))
    async with aiohttp.ClientSession() as client:

        async def hit() -> int:
            async with client.post(rx.url, data=b"{}") as resp:
                return resp.status

        request = asyncio.create_task(hit())
        await rx.wait_for_requests(1)
        started = time.monotonic()
        await rx.stop()
        assert time.monotonic() - started < 5
        (outcome,) = await asyncio.gather(request, return_exceptions=True)
        assert outcome == 204 or isinstance(outcome, aiohttp.ClientError)


async def read_line(proc: asyncio.subprocess.Process) -> dict[str, int]:
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = await proc.stdout.readline()
        assert await proc.wait() == 0
    return dict(json.loads(line))


async def start_process(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.peers.receiver",
        "--port",
        str(port),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    async with aiohttp.ClientSession() as client:
        for _ in range(200):
            try:
                async with client.get(f"http://127.0.0.1:{port}/stats") as resp:
                    if resp.status == 200:
                        return proc, port
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    proc.kill()
    await proc.wait()
    raise TimeoutError("the receiver process did not start")


async def post_signed(port: int, msg_id: str, secret: str) -> int:
    body = json.dumps({"id": msg_id}).encode()
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://127.0.0.1:{port}/hook", data=body, headers=signed(msg_id, body, (secret,))
        ) as resp,
    ):
        return resp.status


async def test_process_mode_exits_after_expected_deliveries(secret: str) -> None:
    """As a process it prints one JSON line of counts once N deliveries were accepted."""
    proc, port = await start_process(
        "--secret", secret, "--service-secret", SERVICE_SECRET, "--expect", "3"
    )
    try:
        assert await post_signed(port, "a", new_route_secret()) == 204  # not verified
        for msg_id in ("a", "b", "a"):
            assert await post_signed(port, msg_id, secret) == 204
        counts = await read_line(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert counts["received"] == 4
    assert counts["unverified"] == 1
    assert (counts["accepted"], counts["distinct"], counts["duplicates"]) == (3, 2, 1)


async def test_process_mode_reports_on_sigterm(secret: str) -> None:
    """SIGTERM makes the process print what it has so far and exit cleanly."""
    proc, port = await start_process("--secret", secret)
    try:
        assert await post_signed(port, "a", secret) == 204
        proc.send_signal(signal.SIGTERM)
        counts = await read_line(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (counts["received"], counts["accepted"]) == (1, 1)
