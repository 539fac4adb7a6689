"""A webhook receiver that verifies every request's signatures, for tests and benchmarks.

From asyncio code::

    async with Receiver(secret=route_secret, service_secret=service_secret) as rx:
        rx.respond(500, status(429, retry_after=2), slow(3), reset())  # then 204 for the rest
        ...  # point a route at rx.url
        await rx.wait_for(3, timeout=10)
        assert rx.count(event_id) == 2

Every POST (on any path) is recorded as a :class:`Delivery`. The Standard Webhooks signature
is checked with the ``standardwebhooks`` package and ``X-EE-Wh-Signature`` with ``hmac``
directly, so neither check shares code with the relay. A delivery is *accepted* when both
signatures verify and the receiver answered 2xx; ``wait_for``, ``ids`` and the counts of the
process mode count accepted deliveries.

Failure modes are queued with :meth:`Receiver.respond` and used by the next requests in
arrival order: a status code (``500``, ``410``), :func:`status` with ``Retry-After``,
:func:`redirect` (``301`` to another path of this receiver), :func:`slow`, and :func:`reset`
(the connection is torn down without an answer). When the queue is empty the receiver
answers ``default_status`` (204).

As a separate process (benchmarks)::

    python -m tests.peers.receiver --port P --secret S --service-secret X --expect N

prints one JSON line of counts once N deliveries were accepted, or on SIGTERM, and exits.
``GET`` on any path answers the same counts, which doubles as a readiness probe. It listens
on 127.0.0.1 only. With ``--latency`` it also reports, over the accepted deliveries, the time
from the event's ``date`` (when the relay made the event) to its arrival: ``GET
/stats?since=MS`` answers ``latency_ms {count, p50, p99, max}`` for the events dated at or
after ``MS`` (epoch milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import signal
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the receiver answers one request."""

    status: int = 204
    delay: float = 0.0
    reset: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    # A path of this receiver; the Location header is made absolute when answering.
    redirect_to: str | None = None


def status(code: int, *, retry_after: float | str | None = None) -> Behaviour:
    """Answer ``code``, with a ``Retry-After`` header when given (seconds or an HTTP-date)."""
    if retry_after is None:
        return Behaviour(code)
    value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
    return Behaviour(code, headers=(("Retry-After", value),))


def redirect(path: str = "/moved", code: int = 301) -> Behaviour:
    """Answer ``code`` with ``Location`` pointing at ``path`` on this receiver."""
    return Behaviour(code, redirect_to=path)


def slow(seconds: float, then: int = 204) -> Behaviour:
    """Wait ``seconds`` before answering ``then``."""
    return Behaviour(then, delay=seconds)


def reset() -> Behaviour:
    """Tear the connection down (TCP RST) without answering."""
    return Behaviour(0, reset=True)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request as the receiver saw it."""

    id: str | None
    headers: dict[str, str]  # names lower-cased
    body: bytes
    path: str
    standard_ok: bool
    ee_ok: bool | None  # None when the receiver has no service secret to check against
    attempt: int | None  # X-EE-Wh-Attempts-Made
    # What the receiver answers (0 for a reset); for a slow answer the client may have left.
    status: int
    received_at: float

    @property
    def verified(self) -> bool:
        """Both signatures verified (only the standard one without a service secret)."""
        return self.standard_ok and self.ee_ok is not False

    @property
    def accepted(self) -> bool:
        """Verified and answered 2xx: the sender may consider it delivered."""
        return self.verified and 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class Receiver:
    """An aiohttp server on a free port of 127.0.0.1 that verifies and records webhooks."""

    def __init__(
        self,
        *,
        secret: str,
        service_secret: str | None = None,
        port: int = 0,
        default_status: int = 204,
        keep: bool = True,
        latency: bool = False,
    ) -> None:
        """``keep=False`` keeps only counts and ids, not every request (long benchmarks);
        ``latency`` keeps each accepted event's date and arrival time (see the module)."""
        self.host = "127.0.0.1"
        self.port = port
        self.default_status = default_status
        self.keep = keep
        self.latency = latency
        # (event date, arrival), epoch milliseconds, of accepted deliveries (latency mode).
        self._arrivals: list[tuple[int, float]] = []
        self.requests: list[Delivery] = []
        self.received = 0
        self.verified_count = 0
        self.accepted_count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._secret = secret
        self._webhook = Webhook(secret)
        self._service_key = service_secret.encode() if service_secret is not None else None
        self._queue: deque[Behaviour] = deque()
        self._attempts: Counter[str] = Counter()
        self._accepted_ids: list[str] = []
        # Kept as they come: stats() is polled while thousands arrive a second, and counting
        # the distinct ids afresh on each poll made the receiver slower as it filled up.
        self._distinct_ids: set[str] = set()
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL to point a route at."""
        return f"{self.base_url}/hook"

    @property
    def secret(self) -> str:
        return self._secret

    @secret.setter
    def secret(self, value: str) -> None:
        """Verify with another route secret from now on (secret rotation)."""
        self._webhook = Webhook(value)
        self._secret = value

    async def start(self) -> None:
        """Listen on ``port`` (a free one when 0) of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        app.router.add_route("GET", "/{tail:.*}", self._stats)
        # Slow handlers are woken by stop(); this only bounds a handler stuck elsewhere.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; slow answers still pending are sent at once."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def respond(self, *behaviours: int | Behaviour) -> None:
        """Queue how the next requests are answered (a plain int is a status code)."""
        for item in behaviours:
            self._queue.append(Behaviour(item) if isinstance(item, int) else item)

    def ids(self) -> list[str]:
        """``webhook-id`` of every accepted delivery, in arrival order (repeats included)."""
        return list(self._accepted_ids)

    def count(self, msg_id: str) -> int:
        """How many requests carried ``msg_id``, whatever the outcome (the attempts)."""
        return self._attempts[msg_id]

    def accepted(self) -> list[Delivery]:
        """The recorded requests that were accepted."""
        return [d for d in self.requests if d.accepted]

    # A timeout argument (not asyncio.timeout around the call) so the error can list what came.
    async def wait_for(self, n: int, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``n`` deliveries were accepted; TimeoutError says what did arrive."""
        await self._wait(lambda: self.accepted_count >= n, timeout, f"{n} accepted deliveries")

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``n`` requests arrived, whatever their outcome."""
        await self._wait(lambda: self.received >= n, timeout, f"{n} requests")

    def stats(self) -> dict[str, Any]:
        """Counts for reports: received, verified, accepted, distinct ids, duplicates."""
        distinct = len(self._distinct_ids)
        return {
            "received": self.received,
            "verified": self.verified_count,
            "unverified": self.received - self.verified_count,
            "accepted": self.accepted_count,
            "distinct": distinct,
            "duplicates": self.accepted_count - distinct,
            "first_at": self.first_at,
            "last_at": self.last_at,
        }

    async def _wait(
        self,
        done: Callable[[], bool],
        timeout: float | None,  # noqa: ASYNC109
        what: str,
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"waited {timeout} s for {what}; got {self.stats()}") from None

    def _verify_standard(self, body: bytes, headers: dict[str, str]) -> bool:
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except Exception:  # any failure, malformed headers included, means "not verified"
            return False
        return True

    def _verify_ee(self, body: bytes, headers: dict[str, str]) -> bool | None:
        if self._service_key is None:
            return None
        digest = hmac.new(self._service_key, body, hashlib.sha256).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return hmac.compare_digest(expected, headers.get("x-ee-wh-signature", ""))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        behaviour = self._queue.popleft() if self._queue else Behaviour(self.default_status)
        try:
            attempt: int | None = int(headers.get("x-ee-wh-attempts-made", ""))
        except ValueError:
            attempt = None
        delivery = Delivery(
            id=headers.get("webhook-id"),
            headers=headers,
            body=body,
            path=request.path,
            standard_ok=self._verify_standard(body, headers),
            ee_ok=self._verify_ee(body, headers),
            attempt=attempt,
            status=behaviour.status,
            received_at=time.time(),
        )
        self._record(delivery)
        if behaviour.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), behaviour.delay)
        if behaviour.reset:
            self._reset(request)
            # The connection is gone; aiohttp sends nothing for a handler that was cancelled.
            raise asyncio.CancelledError
        response = web.Response(status=behaviour.status, headers=dict(behaviour.headers))
        if behaviour.redirect_to is not None:
            response.headers["Location"] = self.base_url + behaviour.redirect_to
        return response

    def _reset(self, request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST instead of FIN, like a crashed or overloaded peer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _record(self, delivery: Delivery) -> None:
        self.received += 1
        now = delivery.received_at
        self.first_at = self.first_at if self.first_at is not None else now
        self.last_at = now
        if delivery.id is not None:
            self._attempts[delivery.id] += 1
        if delivery.verified:
            self.verified_count += 1
        if delivery.accepted and delivery.id is not None:
            self.accepted_count += 1
            self._accepted_ids.append(delivery.id)
            self._distinct_ids.add(delivery.id)
            if self.latency:
                self._arrivals.append((_event_ms(delivery.body), now * 1000))
        if self.keep:
            self.requests.append(delivery)
        self._changed.set()
        self._changed = asyncio.Event()

    def latency_ms(self, since_ms: int = 0) -> dict[str, float]:
        """Event date -> arrival of the accepted events dated at or after ``since_ms``."""
        spans = sorted(at - dated for dated, at in self._arrivals if dated >= since_ms)
        if not spans:
            return {"count": 0}

        def pick(share: float) -> float:
            return round(spans[min(len(spans) - 1, int(len(spans) * share))], 1)

        return {"count": len(spans), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}

    async def _stats(self, request: web.Request) -> web.Response:
        body = self.stats()
        # Only when asked for (``?since=``): it sorts every arrival, and progress polls come
        # every few milliseconds.
        if self.latency and "since" in request.query:
            body["latency_ms"] = self.latency_ms(int(request.query["since"]))
        return web.json_response(body)


def _event_ms(body: bytes) -> int:
    """The envelope's ``date`` (ISO 8601) as epoch milliseconds; 0 when there is none."""
    try:
        stamp = json.loads(body).get("date")
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, AttributeError, TypeError):
        return 0


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    rx = Receiver(
        secret=args.secret,
        service_secret=args.service_secret,
        port=args.port,
        keep=False,
        latency=args.latency,
    )
    await rx.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stopped.wait())]
    if args.expect > 0:
        waiters.append(asyncio.create_task(rx.wait_for(args.expect, timeout=None)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await rx.stop()
    return rx.stats()


# The repository root: ``python -m tests.peers.receiver`` runs from there.
_ROOT = Path(__file__).resolve().parents[2]


async def spawn(
    port: int, secret: str, service_secret: str | None = None, *, latency: bool = False
) -> asyncio.subprocess.Process:
    """Start the receiver as a process of its own (see the module) and return once it
    answers; stop it with SIGTERM."""
    args = ["--port", str(port), "--secret", secret]
    if service_secret is not None:
        args += ["--service-secret", service_secret]
    if latency:
        args.append("--latency")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.peers.receiver",
        *args,
        cwd=_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/stats"
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            try:
                async with http.get(url) as resp:
                    await resp.read()
                    return proc
            except aiohttp.ClientError:
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
    proc.kill()
    await proc.wait()
    raise RuntimeError(f"the receiver did not start on port {port}")


def main(argv: list[str] | None = None) -> None:
    """Run a receiver until ``--expect`` deliveries were accepted or SIGTERM; print counts."""
    parser = argparse.ArgumentParser(prog="python -m tests.peers.receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True, help="the route's whsec_ secret")
    parser.add_argument("--service-secret", default=None, help="checks X-EE-Wh-Signature")
    parser.add_argument("--expect", type=int, default=0, help="exit after N accepted")
    parser.add_argument(
        "--latency", action="store_true", help="report event date -> arrival (latency_ms)"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop

        counts = uvloop.run(_serve(args))
    except ImportError:
        counts = asyncio.run(_serve(args))
    sys.stdout.write(json.dumps(counts) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
