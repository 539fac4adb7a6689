"""The :class:`DeliveryWorker`: claim -> sign -> POST (or publish) -> record, with bounded
concurrency.

HTTP routes are POSTed to; queue sink routes (``amqp``, ``nats``, ``redis``) publish the same
body with the same signature headers to their broker, through one connection per broker
(:mod:`relay.webhooks.sinks`), and count as delivered once the broker confirmed.

Outcomes are written in batches (one transaction for many attempts), inside
``asyncio.shield`` so that shutdown cannot lose a result that was already known. A
delivery whose outcome never got written keeps its lease and is attempted again later:
delivery is at least once, and receivers de-duplicate on ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import structlog

from relay import __version__
from relay.auth.crypto import Cipher
from relay.config import WebhookSettings
from relay.errors import StoreError
from relay.metrics import Metrics
from relay.store import Store
from relay.store import deliveries as queue
from relay.store import webhook_routes as routes_store
from relay.store.deliveries import Claimed, Outcome, Stored
from relay.store.engine import Wake
from relay.store.outage import retry_level
from relay.store.schema import DeliveryStatus
from relay.webhooks.outcome import Verdict, judge
from relay.webhooks.outcome_waiters import OutcomeWaiters
from relay.webhooks.poster import AttemptError, Poster
from relay.webhooks.routes import Route, route_from_row, service_secret
from relay.webhooks.signing import delivery_headers, sink_headers
from relay.webhooks.sink_targets import HTTP
from relay.webhooks.sinks.base import SinkFailed, SinkMessage
from relay.webhooks.sinks.pool import Publishers
from relay.webhooks.ssrf import AddressPolicy, ssrf_reason

log = structlog.get_logger(__name__)

_BODY_LIMIT = 1024
_FLUSH_WINDOW = 0.05
_FLUSH_BATCH = 512
_ROUTE_REFRESH = 1.0
_PRUNE_EVERY = 300.0
_CONFIRMED = Verdict(DeliveryStatus.DELIVERED)


@dataclass
class Counters:
    delivered: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(slots=True)
class _Inflight:
    claimed: Claimed
    done: bool = field(default=False)


@dataclass(slots=True)
class Slot:
    """One of this node's attempt slots, held by code that queues a delivery and has this
    node attempt it at once (``POST /v1/webhooks/{id}/test``): it queues the delivery
    already taken, with :func:`relay.store.deliveries.add_one` and these values, and hands
    it over with :meth:`DeliveryWorker.hand_over` once that committed."""

    route_id: str
    node: str
    now_ms: int
    lease_until_ms: int
    started: bool = False


class DeliveryWorker:
    """Owns the delivery loop of one node."""

    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        settings: WebhookSettings,
        metrics: Metrics,
        *,
        node: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.settings = settings
        self.metrics = metrics
        self.node = node or f"{socket.gethostname()}:{id(self):x}"
        self.clock = clock
        self.counters = Counters()
        self.user_agent = f"mailrelay/{__version__}"
        self._policy = AddressPolicy.from_networks(settings.allow_networks)
        self._wakeup = asyncio.Event()
        self._flush_needed = asyncio.Event()
        self._flush_full = asyncio.Event()
        # Set by stop(): the loops end, nothing more is claimed.
        self._stopping = asyncio.Event()
        # Claimed deliveries until their outcome is written; _active counts the HTTP attempts
        # running now, which is what the concurrency limit bounds.
        self._inflight: dict[int, _Inflight] = {}
        self._active = 0
        # Claimed attempts wait here for one of the ``concurrency`` attempt tasks, which live
        # as long as the worker (no task created per delivery). A claim never takes more than
        # there are tasks free to run it at once, so nothing waits here for long.
        # An item is one HTTP attempt, or the deliveries of one claim to one queue sink.
        self._ready: asyncio.Queue[list[tuple[_Inflight, Stored]]] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._attempters: list[asyncio.Task[None]] = []
        self._refill_at = max(1, min(settings.batch_size, settings.concurrency) // 4)
        # Attempts running now per route. A claim skips the routes without a good share of
        # their route_concurrency free, and gives back in the same transaction what it took
        # beyond a route's free slots: a delivery never waits on this node for its route, so
        # a route whose receiver hangs holds its own slots and no others.
        self._route_active: Counter[str] = Counter()
        self._route_refill_at = max(1, settings.route_concurrency // 4)
        # Routes that had more due than they had slots at the last claim: a slot of theirs
        # that frees up is worth a claim.
        self._route_backlog: set[str] = set()
        # Whether the last claim took all it asked for: more may be due. Only then does a
        # finished attempt or flush look for work at once; otherwise a commit that queues
        # deliveries wakes the loop (Wake.DELIVERIES), or the poll does.
        self._backlog = True
        self._claims = 0
        self._outcomes: list[Outcome] = []
        self._routes: dict[str, Route] = {}
        self._routes_stamp: tuple[int, int, int] | None = None
        # Counts routes_changed() calls: a change announced while the routes were being read
        # may be missing from that read (see _refresh_routes).
        self._routes_changes = 0
        self._service_secret = ""
        self._poster: Poster | None = None
        # Queue sinks: one broker connection per address, kept across deliveries.
        self.publishers = Publishers(self._policy, timeout=settings.timeout)
        self._tasks: list[asyncio.Task[None]] = []
        self._ending: list[asyncio.Task[None]] = []
        # Woken once an outcome of their delivery is committed (POST /v1/webhooks/{id}/test).
        self.outcome_waiters = OutcomeWaiters()
        # The labelled metrics, looked up once (a lookup costs about what the count does).
        self._attempt_metrics = {
            result: metrics.webhook_attempts.labels(result=result)
            for result in (DeliveryStatus.DELIVERED, DeliveryStatus.PENDING, DeliveryStatus.FAILED)
        }
        self._delivery_metrics = {
            outcome: metrics.webhook_deliveries.labels(outcome=outcome)
            for outcome in ("delivered", "failed")
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        async with self.store.write(notify=False) as conn:
            self._service_secret = await service_secret(conn, self.cipher, create=True) or ""
        await self._refresh_routes(force=True)
        self._poster = Poster(self._policy, timeout=self.settings.timeout, excerpt=_BODY_LIMIT)
        self.store.on_commit(Wake.DELIVERIES, self.wake)
        # The claim and maintenance loops end by themselves at stop(); the flush loop is
        # cancelled (its writes are shielded).
        self._ending = [
            asyncio.create_task(self._claim_loop(), name="webhooks.claim"),
            asyncio.create_task(self._maintenance_loop(), name="webhooks.maintenance"),
        ]
        self._attempters = [
            asyncio.create_task(self._attempt_loop(), name="webhooks.attempt")
            for _ in range(self.settings.concurrency)
        ]
        self._tasks = [
            *self._ending,
            asyncio.create_task(self._flush_loop(), name="webhooks.flush"),
        ]

    async def stop(self, grace: float) -> None:
        """Stop claiming, let running attempts finish for up to ``grace`` s, record everything."""
        self._stopping.set()
        self._wakeup.set()
        self.store.off_commit(Wake.DELIVERIES, self.wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        for task in self._attempters:
            task.cancel()
        await asyncio.gather(*self._attempters, return_exceptions=True)
        self._flush_needed.set()
        # The claim and maintenance loops end by themselves once their write is over: a
        # write cancelled mid-statement would take the store's shared transaction (and the
        # other writes grouped in it) down with it.
        if self._ending:
            await asyncio.wait(self._ending, timeout=grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush()
        unfinished = [seq for seq, i in self._inflight.items() if not i.done]
        if unfinished:
            with contextlib.suppress(StoreError):
                async with self.store.write(notify=False) as conn:
                    await queue.release(conn, unfinished, node=self.node, now=self._now_ms())
        if self._poster is not None:
            await self._poster.close()
        await self.publishers.close()

    def wake(self) -> None:
        """Something was queued: look for work now instead of at the next poll."""
        self._backlog = True
        self._wakeup.set()

    def routes_changed(self) -> None:
        self._routes_changes += 1
        self._routes_stamp = None
        self._wakeup.set()

    # -- claiming ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def _claim_loop(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = self.settings.concurrency - self._active
            claimed = 0
            # Claim for a good share of the slots at once, not for each one that frees: a
            # finished attempt wakes the loop again once that many are free. No claim takes
            # more than the routes have free slots for.
            if free >= self._refill_at:
                try:
                    if self._routes_stamp is None:  # routes changed through this node's API
                        await self._refresh_routes(force=True)
                    room = self._route_room()
                    if room >= self._route_refill_at:
                        claimed = await self._claim(min(free, self.settings.batch_size, room))
                    backoff = 0.0
                except StoreError as exc:
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    log.log(
                        retry_level(exc), "claiming deliveries failed; retrying", retry_in=backoff
                    )
                    await self.store.outage.wait(backoff)
                    continue
            if claimed and self._backlog:
                await asyncio.sleep(0)  # more may be due: go again after letting others run
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.settings.poll_interval)

    async def _claim(self, limit: int) -> int:
        """Claim and start up to ``limit`` deliveries; the number of rows the claim took
        (including those given back for want of a free slot on their route)."""
        # Looking for fifo heads costs a grouped scan of the queue: only when there is a
        # fifo route (one added through another node is seen at the next route refresh).
        fifo = any(r.ordering == "fifo" for r in self._routes.values())
        now = self._now_ms()
        lease_until = now + int(self.settings.lease * 1000)
        # Retries get an eighth of each claim, fresh deliveries the rest; below eight slots
        # every other claim gives the retries first pick of one, so neither lane starves.
        self._claims += 1
        retry_share = max(limit // 8, self._claims % 2)
        fresh_limit = limit - retry_share
        full = self._full_routes()
        async with self.store.write(notify=False) as conn:
            batch = await queue.claim(
                conn,
                lane=0,
                now=now,
                limit=fresh_limit,
                lease_until=lease_until,
                node=self.node,
                skip_routes=full,
            )
            retries = await queue.claim(
                conn,
                lane=1,
                now=now,
                limit=limit - len(batch),
                lease_until=lease_until,
                node=self.node,
                skip_routes=full,
            )
            # A lane that gave all that was asked of it (or was not asked) may have more due.
            self._backlog = fresh_limit <= len(batch) or 0 < limit - len(batch) <= len(retries)
            batch, surplus = self._fit_routes(batch + retries)
            if surplus:
                # Due but beyond their routes' free slots: back to the queue untouched (same
                # transaction, so no other node saw them taken), and claim again at once
                # without those routes.
                await queue.release(conn, [c.seq for c in surplus], node=self.node, now=now)
                self._backlog = True
            if fifo:
                heads = await queue.claim_fifo_heads(
                    conn, now=now, lease_until=lease_until, node=self.node
                )
                self._route_active.update(c.route_id for c in heads)
                batch += heads
            if not batch:
                return len(surplus)
            bodies = await queue.payloads(conn, [c.event_id for c in batch])
        if any(c.route_id not in self._routes for c in batch):
            await self._refresh_routes(force=True)
        self._idle.clear()
        # A queue sink route's deliveries of this claim go to its broker as one submission
        # (in claim order), run by one attempt task; each HTTP delivery is an attempt of its
        # own.
        sinks: dict[str, list[tuple[_Inflight, Stored]]] = {}
        for c in batch:
            entry = _Inflight(c)
            self._inflight[c.seq] = entry
            self._active += 1
            route = self._routes.get(c.route_id)
            if route is not None and route.kind != HTTP:
                sinks.setdefault(route.id, []).append((entry, bodies[c.event_id]))
            else:
                self._ready.put_nowait([(entry, bodies[c.event_id])])
        for work in sinks.values():
            self._ready.put_nowait(work)
        return len(batch) + len(surplus)

    @contextlib.contextmanager
    def slot(self, route_id: str) -> Iterator[Slot | None]:
        """An attempt slot for a delivery to ``route_id`` the caller queues itself, held for
        the block; None when the route has no free slot here (or is ordered, or unknown to
        this node yet): the delivery is then queued for the claim loop as any other. A slot
        not handed a delivery (:meth:`hand_over`) by the end of the block is given back.

        Saves the delivery a claim transaction of its own, and the wait for the claim loop."""
        route = self._routes.get(route_id)
        if (
            self._stopping.is_set()
            or self._poster is None
            or route is None
            or not route.enabled
            or route.ordering == "fifo"
            or self._active >= self.settings.concurrency
            or self._route_active[route_id] >= self.settings.route_concurrency
        ):
            yield None
            return
        self._active += 1
        self._route_active[route_id] += 1
        self._idle.clear()
        now = self._now_ms()
        held = Slot(route_id, self.node, now, now + int(self.settings.lease * 1000))
        try:
            yield held
        finally:
            if not held.started:
                self._release(route_id, 1)

    def hand_over(self, held: Slot, claimed: Claimed, stored: Stored) -> None:
        """Attempt ``claimed`` in ``held`` (its claim is committed, with ``held``'s lease)."""
        held.started = True
        entry = _Inflight(claimed)
        self._inflight[claimed.seq] = entry
        self._ready.put_nowait([(entry, stored)])

    def _route_room(self) -> int:
        """Free slots over the enabled routes."""
        limit = self.settings.route_concurrency
        return sum(limit - self._route_active[r.id] for r in self._routes.values() if r.enabled)

    def _full_routes(self) -> list[str]:
        """Routes with fewer than a good share of their slots free: not claimed for."""
        room = self.settings.route_concurrency - self._route_refill_at
        return [route for route, n in self._route_active.items() if n > room]

    def _fit_routes(self, claimed: Sequence[Claimed]) -> tuple[list[Claimed], list[Claimed]]:
        """Split ``claimed`` into what fits its routes' free slots (now counted as taken)
        and the surplus."""
        fits: list[Claimed] = []
        surplus: list[Claimed] = []
        limit = self.settings.route_concurrency
        for c in claimed:
            if self._route_active[c.route_id] < limit:
                self._route_active[c.route_id] += 1
                fits.append(c)
            else:
                surplus.append(c)
                self._route_backlog.add(c.route_id)
        return fits, surplus

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt_loop(self) -> None:
        while True:
            work = await self._ready.get()
            try:
                await self._deliver(work)
            except Exception:
                # A bug, not an answer: the deliveries keep their leases and are attempted
                # again once the leases ran out; this task goes on with the next.
                log.exception("webhook attempt failed", seq=work[0][0].claimed.seq)

    async def _deliver(self, work: list[tuple[_Inflight, Stored]]) -> None:
        route_id = work[0][0].claimed.route_id
        route = self._routes.get(route_id)
        try:
            if route is None:  # deleted meanwhile: its deliveries went with it
                for entry, _ in work:
                    entry.done = True
                    self._inflight.pop(entry.claimed.seq, None)
                return
            if route.kind == HTTP:
                # One delivery (several only when the route became HTTP since the claim).
                outcomes = [await self._attempt(route, e.claimed, s.payload) for e, s in work]
            else:
                outcomes = await self._publish(route, work)
            self._outcomes += outcomes
            self._flush_needed.set()
            if (
                len(self._outcomes) >= _FLUSH_BATCH
                or route.ordering == "fifo"
                # The last attempt running: no other outcome is coming to share the write.
                or self._active == len(work)
                or (
                    self.outcome_waiters
                    and any((e.claimed.event_id, route.id) in self.outcome_waiters for e, _ in work)
                )
            ):
                self._flush_full.set()
        finally:
            self._release(route_id, len(work))

    def _release(self, route_id: str, count: int) -> None:
        """``count`` attempt slots of ``route_id`` are free again."""
        self._active -= count
        if not self._active:
            self._idle.set()
        for _ in range(count):
            self._free_route_slot(route_id)
        # Claim again once a good share of the slots is free, not after every attempt:
        # one claim transaction per finished attempt would cost more than it brings.
        if self._backlog and self.settings.concurrency - self._active >= self._refill_at:
            self._wakeup.set()

    def _free_route_slot(self, route_id: str) -> None:
        left = self._route_active[route_id] - 1
        if left > 0:
            self._route_active[route_id] = left
        else:
            self._route_active.pop(route_id, None)
        # A route that had more due than slots: claim for it once a good share is free.
        if (
            route_id in self._route_backlog
            and self.settings.route_concurrency - left >= self._route_refill_at
        ):
            self._route_backlog.discard(route_id)
            self._backlog = True

    async def _attempt(self, route: Route, claimed: Claimed, payload: str) -> Outcome:
        assert self._poster is not None
        attempt = claimed.attempts + 1
        body = payload.encode()
        started = self.clock()
        headers = delivery_headers(
            msg_id=claimed.event_id,
            timestamp=int(started),
            body=body,
            route_secrets=route.secrets,
            service_secret=self._service_secret,
            attempt=attempt,
            user_agent=self.user_agent,
            custom=route.headers,
        )
        status: int | None = None
        error: str | None = None
        response_body: str | None = None
        retry_after: str | None = None
        location: str | None = None
        try:
            answer = await self._poster.post(route.url, body, headers)
        except TimeoutError:
            error = f"timed out after {self.settings.timeout:g} s"
        except AttemptError as exc:
            error = str(exc)
        except OSError as exc:
            error = ssrf_reason(exc) or f"{exc.__class__.__name__}: {exc}"
        else:
            status = answer.status
            retry_after = answer.retry_after
            location = answer.location
            response_body = answer.excerpt
        finished = self.clock()
        verdict = judge(
            status=status,
            error=error,
            attempt=attempt,
            schedule=route.schedule,
            now=finished,
            retry_after=retry_after,
            max_retry_after=self.settings.max_retry_after,
            location=location,
        )
        return _outcome(
            claimed, route, attempt, (started, finished), verdict, status, response_body
        )

    async def _publish(
        self, route: Route, work: Sequence[tuple[_Inflight, Stored]]
    ) -> list[Outcome]:
        """One attempt of each delivery on a queue sink, submitted together: delivered once
        the broker confirmed its message."""
        started = self.clock()
        timestamp = int(started)
        messages = []
        for entry, stored in work:
            event_id = entry.claimed.event_id
            body = stored.payload.encode()
            messages.append(
                SinkMessage(
                    route_id=route.id,
                    options=route.sink,
                    event_id=event_id,
                    event=stored.event,
                    account=stored.account,
                    timestamp=timestamp,
                    body=body,
                    headers=sink_headers(
                        msg_id=event_id,
                        timestamp=timestamp,
                        body=body,
                        route_secrets=route.secrets,
                    ),
                )
            )
        # Submitted before the first await: the publisher sends in the order of submission,
        # which is the order the deliveries were claimed in.
        answers = await self.publishers.get(route.kind, route.url).submit(messages)
        finished = self.clock()
        outcomes = []
        for (entry, _), answer in zip(work, answers, strict=True):
            claimed = entry.claimed
            attempt = claimed.attempts + 1
            if isinstance(answer, SinkFailed):
                verdict = judge(
                    status=None,
                    error=str(answer),
                    attempt=attempt,
                    schedule=route.schedule,
                    now=finished,
                    max_retry_after=self.settings.max_retry_after,
                )
                response = None
            else:
                verdict = _CONFIRMED
                response = answer
            outcomes.append(
                _outcome(claimed, route, attempt, (started, finished), verdict, None, response)
            )
        return outcomes

    # -- recording ---------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_needed.wait()
            # Gather a batch for at most _FLUSH_WINDOW, or until _FLUSH_BATCH outcomes (or
            # one that is waited for) wait: under load a flush transaction carries many
            # outcomes.
            if not self._flush_full.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_FLUSH_WINDOW):
                        await self._flush_full.wait()
            self._flush_needed.clear()
            self._flush_full.clear()
            await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        now = self._now_ms()
        disable_after = int(self.settings.disable_after_days * 86_400_000)
        try:
            async with self.store.write(notify=False) as conn:
                await queue.finish(conn, batch, now=now, disable_after_ms=disable_after)
        except StoreError as exc:
            # Keep them: the next flush tries again; the leases protect the rows meanwhile.
            self._outcomes = batch + self._outcomes
            self._flush_needed.set()
            log.log(
                retry_level(exc), "recording delivery outcomes failed; will retry", count=len(batch)
            )
            await asyncio.sleep(0.5)
            return
        if self.outcome_waiters:
            self.outcome_waiters.resolve(
                ((self._inflight[o.seq].claimed.event_id, o.route_id), o)
                for o in batch
                if o.seq in self._inflight
            )
        results: Counter[str] = Counter()
        latency = self.metrics.webhook_latency
        for o in batch:
            entry = self._inflight.pop(o.seq, None)
            if entry is not None:
                entry.done = True
            results[o.result] += 1
            if o.result == DeliveryStatus.DELIVERED and entry is not None:
                latency.observe(max(0.0, (now - entry.claimed.created_ms) / 1000))
            if o.disable_route:
                log.warning("route disabled", route=o.route_id, reason=o.disable_route)
                self.routes_changed()
        # Counted once per batch: a metric's increment takes a lock, and costs about as much
        # as the count itself.
        for result, count in results.items():
            self._attempt_metrics[result].inc(count)
        delivered = results[DeliveryStatus.DELIVERED]
        failed = results[DeliveryStatus.FAILED]
        self.counters.delivered += delivered
        self.counters.failed += failed
        self.counters.retried += results[DeliveryStatus.PENDING]
        self._delivery_metrics["delivered"].inc(delivered)
        self._delivery_metrics["failed"].inc(failed)
        # Capacity freed; and a fifo route's next delivery can go once this one is recorded.
        if self._backlog or any(self._is_fifo(o.route_id) for o in batch):
            self._wakeup.set()

    def _is_fifo(self, route_id: str) -> bool:
        route = self._routes.get(route_id)
        return route is not None and route.ordering == "fifo"

    # -- housekeeping ------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        last_prune = 0.0
        interval = max(0.2, min(_ROUTE_REFRESH, self.settings.lease / 4))
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                if await self._refresh_routes():
                    self._wakeup.set()  # a route added or enabled elsewhere has work now
                now = self._now_ms()
                async with self.store.write(notify=False) as conn:
                    reaped = await queue.reap(conn, now=now)
                    if self.clock() - last_prune > _PRUNE_EVERY:
                        retention = int(self.settings.retention_days * 86_400_000)
                        await queue.prune(conn, before_ms=now - retention)
                        last_prune = self.clock()
                if reaped:
                    log.info("took back deliveries whose lease ran out", count=reaped)
                    self._wakeup.set()
            except StoreError as exc:
                log.log(retry_level(exc), "queue maintenance failed; will retry")

    async def _refresh_routes(self, *, force: bool = False) -> bool:
        """Read the routes again (only when they changed, unless ``force``); whether they
        did."""
        changes = self._routes_changes
        async with self.store.read() as conn:
            rows = await routes_store.all_routes(conn)
            secret = await service_secret(conn, self.cipher, create=False)
        now = self._now_ms()
        overlapping = sum(1 for r in rows if (r["previous_until_ms"] or 0) > now)
        stamp = (len(rows), max((int(r["updated_ms"]) for r in rows), default=0), overlapping)
        if secret:
            self._service_secret = secret
        if not force and stamp == self._routes_stamp:
            return False
        self._routes = {r["id"]: route_from_row(r, self.cipher, now) for r in rows}
        # A change announced during the read (a route committed after it began) keeps the
        # routes stale, so the claim loop reads them again: with only wake-ups and no poll,
        # a new route was otherwise unknown until the next poll and nothing was claimed.
        self._routes_stamp = stamp if changes == self._routes_changes else None
        # A broker that no route names any more: its connection goes.
        await self.publishers.keep_only(
            (r.kind, r.url) for r in self._routes.values() if r.kind != HTTP
        )
        return True


def _outcome(
    claimed: Claimed,
    route: Route,
    attempt: int,
    span: tuple[float, float],
    verdict: Verdict,
    status: int | None,
    response_body: str | None,
) -> Outcome:
    """What one attempt (from ``span[0]`` to ``span[1]``, clock seconds) is recorded as."""
    started, finished = span
    return Outcome(
        seq=claimed.seq,
        route_id=route.id,
        attempt=attempt,
        started_ms=int(started * 1000),
        duration_ms=int((finished - started) * 1000),
        status_code=status,
        error=verdict.error,
        response_body=response_body,
        result=verdict.result,
        next_attempt_ms=verdict.next_attempt_ms,
        disable_route=verdict.disable_route,
    )
