"""Delivers change and lifecycle notifications as Graph does, on the sandbox clock.

- **Validation**: before a subscription is created, ``POST {url}?validationToken=...``
  (``Validation: Testing client application reachability for subscription Request-Id:
  <uuid>``, url-encoded) must be answered with 200, ``text/plain`` and the decoded token as
  the whole body within ``validation_timeout`` (10 s), or the create fails with 400
  ``ValidationError``.
- **Batching**: changes are collected for ``batch_window`` (5 ms) and sent as one POST per
  URL, with up to ``max_batch`` notifications of any number of subscriptions.
- **Retries**: a non-2xx answer, a connection error, or an answer slower than
  ``response_timeout`` (10 s, measured on the sandbox clock as well) is retried after 10 s,
  1 min, 5 min, 15 min, 30 min, then every hour, for up to 4 hours after the first attempt;
  then the notifications are dropped. Graph's own schedule is not published; this one is
  shorter but covers the same 4 hours. One POST per URL is in flight at a time.
- **Slow endpoints**: answers taking more than 2.9 s (sandbox clock) count as slow. Over the
  answers of the last 10 minutes (at least 10 of them), an endpoint with >= 10 % slow ones
  has new notifications delayed by 10 minutes, and one with >= 15 % has them dropped, for
  10 minutes. Dropped change notifications are followed by a ``missed`` lifecycle
  notification to subscriptions that have a lifecycle URL.
- **Expiry**: at ``expirationDateTime`` a subscription is removed; nothing more is sent for
  it, except a ``subscriptionRemoved`` lifecycle notification when it has a lifecycle URL.

Everything that waits is planned on the sandbox clock; advancing the clock wakes the
dispatcher, so tests drive hours of retries without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
from yarl import URL

from relay.sandbox.graph.errors import GraphError
from relay.sandbox.graph.mail import MailChange
from relay.sandbox.graph.odata import format_precise
from relay.sandbox.graph.subscriptions import Subscription
from relay.sandbox.state import SandboxState

RETRY_DELAYS = (10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
RETRY_HORIZON = 4 * 3600.0
SLOW_AFTER = 2.9
HEALTH_WINDOW = 600.0
HEALTH_MIN_ANSWERS = 10
DELAY_SHARE = 0.10
DROP_SHARE = 0.15
PENALTY = 600.0
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
_MAX_SLEEP = 30.0


def next_retry(first_attempt: float, attempts: int, now: float) -> float | None:
    """When to try again after ``attempts`` failed attempts, or None to give up."""
    delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
    due = now + delay
    return due if due - first_attempt <= RETRY_HORIZON else None


@dataclass
class EndpointHealth:
    """Slow-answer accounting of one URL over a sliding window."""

    answers: deque[tuple[float, bool]] = field(default_factory=deque)
    delayed_until: float = 0.0
    dropping_until: float = 0.0

    def record(self, now: float, elapsed: float) -> None:
        """Count one answer and, past a threshold, start a delay or drop period."""
        self.answers.append((now, elapsed > SLOW_AFTER))
        share = self.slow_share(now)
        if len(self.answers) < HEALTH_MIN_ANSWERS:
            return
        if share >= DROP_SHARE:
            self.dropping_until = now + PENALTY
        elif share >= DELAY_SHARE:
            self.delayed_until = now + PENALTY

    def slow_share(self, now: float) -> float:
        """The share of slow answers in the window (0 without answers)."""
        while self.answers and self.answers[0][0] <= now - HEALTH_WINDOW:
            self.answers.popleft()
        if not self.answers:
            return 0.0
        return sum(1 for _, slow in self.answers if slow) / len(self.answers)

    def mode(self, now: float) -> str:
        """``normal``, ``delayed`` or ``dropping``."""
        if now < self.dropping_until:
            return "dropping"
        if now < self.delayed_until:
            return "delayed"
        return "normal"


@dataclass
class EndpointStats:
    """What happened to the notifications sent to one URL."""

    url: str
    health: EndpointHealth = field(default_factory=EndpointHealth)
    posts: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    retries: int = 0
    dropped: int = 0
    delayed: int = 0
    slow: int = 0
    last_status: int | None = None
    last_error: str | None = None

    def to_json(self, now: float, pending: int) -> dict[str, Any]:
        """The admin API's view."""
        share = self.health.slow_share(now)
        return {
            "url": self.url,
            "state": self.health.mode(now),
            "posts": self.posts,
            "delivered": self.delivered,
            "failedAttempts": self.failed_attempts,
            "retries": self.retries,
            "dropped": self.dropped,
            "delayed": self.delayed,
            "slowAnswers": self.slow,
            "answersInWindow": len(self.health.answers),
            "slowShare": round(share, 4),
            "delayedUntil": _iso_or_none(self.health.delayed_until, now),
            "droppingUntil": _iso_or_none(self.health.dropping_until, now),
            "pending": pending,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
        }


def _iso_or_none(when: float, now: float) -> str | None:
    return format_precise(when) if when > now else None


@dataclass
class Item:
    """One notification; ``lifecycle`` ones survive their subscription."""

    payload: dict[str, Any]
    subscription_id: str
    lifecycle: bool


@dataclass
class Batch:
    """Notifications for one URL, sent in one POST (and retried together)."""

    url: str
    items: list[Item]
    due: float
    attempts: int = 0
    first_attempt: float | None = None


@dataclass(frozen=True)
class NotifierSettings:
    """Timeouts and batching; ``ssl`` verifies https notification URLs."""

    validation_timeout: float = 10.0
    response_timeout: float = 10.0
    batch_window: float = 0.005
    max_batch: int = 100
    ssl: ssl.SSLContext | bool = True


def change_payload(sub: Subscription, change: MailChange) -> dict[str, Any]:
    """One change notification as Graph sends it (without resource data).

    A subscription created with immutable ids names the message by its immutable id.
    """
    message_id = change.immutable_id if sub.immutable_ids else change.message_id
    resource = f"Users/{change.owner_id}/Messages/{message_id}"
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_precise(sub.expires_at, offset=True),
        "changeType": change.change_type,
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": resource,
            "@odata.etag": change.etag,
            "id": message_id,
        },
        "clientState": sub.client_state,
        "tenantId": sub.tenant_id,
    }


def lifecycle_payload(sub: Subscription, event: str) -> dict[str, Any]:
    """One lifecycle notification."""
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_precise(sub.expires_at, offset=True),
        "tenantId": sub.tenant_id,
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }


class Notifier:
    """Owns the delivery loop: collect -> batch -> POST -> retry or drop."""

    def __init__(self, state: SandboxState, settings: NotifierSettings | None = None) -> None:
        self.state = state
        self.settings = settings or NotifierSettings()
        self._fresh: dict[str, list[Item]] = {}
        self._batches: list[Batch] = []
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats: dict[str, EndpointStats] = {}
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None

    # -- lifecycle of the notifier itself -------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client and start the dispatcher."""
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.settings.ssl),
            headers={"User-Agent": "relay-sandbox-graph-notifications"},
        )
        self.state.mail.listeners.append(self.on_change)
        self.state.clock_listeners.append(self.wake)
        self._runner = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the dispatcher, cancel deliveries in flight and close the HTTP client."""
        with contextlib.suppress(ValueError):
            self.state.mail.listeners.remove(self.on_change)
        with contextlib.suppress(ValueError):
            self.state.clock_listeners.remove(self.wake)
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        """Make the dispatcher look again (new work, or the clock moved)."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- what there is to send ------------------------------------------------------

    def on_change(self, change: MailChange) -> None:
        """Queue a change notification for every subscription that watches the change."""
        now = self.state.now()
        mailbox = self.state.mail.mailboxes.get(change.mailbox)
        folder = mailbox.folders.get(change.folder_id) if mailbox else None
        if folder is None or folder.hidden:
            return
        for sub in list(self.state.subscriptions.values()):
            if sub.expires_at > now and sub.watches(
                change.mailbox, change.folder_id, change.change_type
            ):
                item = Item(change_payload(sub, change), sub.id, lifecycle=False)
                self._enqueue(sub.notification_url, item)

    def lifecycle(self, sub: Subscription, event: str) -> bool:
        """Queue a lifecycle notification; False when ``sub`` has no lifecycle URL."""
        if sub.lifecycle_url is None:
            return False
        self._enqueue(sub.lifecycle_url, Item(lifecycle_payload(sub, event), sub.id, True))
        return True

    def remove(self, sub: Subscription) -> bool:
        """Remove a subscription as Graph does: ``subscriptionRemoved`` if it can be told."""
        self.state.subscriptions.pop(sub.id, None)
        return self.lifecycle(sub, "subscriptionRemoved")

    def _enqueue(self, url: str, item: Item) -> None:
        self._fresh.setdefault(url, []).append(item)
        self.wake()

    # -- validation handshake --------------------------------------------------------

    async def validate(self, url: str) -> None:
        """Graph's validation request to a notification URL; 400 ``ValidationError``."""
        assert self._session is not None, "the notifier is not started"
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        separator = "&" if urlsplit(url).query else "?"
        target = URL(f"{url}{separator}validationToken={quote_plus(token)}", encoded=True)
        timeout = aiohttp.ClientTimeout(total=self.settings.validation_timeout)
        try:
            async with self._session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status, reason = response.status, response.reason or str(response.status)
                content_type = response.content_type
        except TimeoutError:
            raise _validation_error("Subscription validation request timed out.") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _validation_error(
                f"Subscription validation request failed. {type(exc).__name__}: {exc}. "
                "Notification endpoint must respond with 200 OK to validation request."
            ) from None
        if status != 200:
            raise _validation_error(
                f"Subscription validation request failed. HTTP status code is '{reason}'. "
                "Notification endpoint must respond with 200 OK to validation request."
            )
        if content_type != "text/plain":
            raise _validation_error(
                "Subscription validation request failed. Response must have a content type "
                f"of 'text/plain', not '{content_type}'."
            )
        if raw.decode("utf-8", "replace") != token:
            raise _validation_error(
                "Subscription validation request failed. Response must exactly match "
                "validationToken query parameter (the decoded token as the whole body)."
            )

    # -- the dispatcher --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            if self._fresh:
                await asyncio.sleep(self.settings.batch_window)
            now = self.state.now()
            self._expire(now)
            self._flush(now)
            self._dispatch(now)
            self._progress.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._sleep_for(now))

    def _expire(self, now: float) -> None:
        for sub in list(self.state.subscriptions.values()):
            if sub.expires_at <= now:
                self.remove(sub)

    def _flush(self, now: float) -> None:
        fresh, self._fresh = self._fresh, {}
        for url, items in fresh.items():
            stats = self._stats_for(url)
            mode = stats.health.mode(now)
            now_items = [item for item in items if item.lifecycle or mode == "normal"]
            held = [item for item in items if not (item.lifecycle or mode == "normal")]
            self._add_batches(url, now_items, now)
            if mode == "delayed":
                stats.delayed += len(held)
                self._add_batches(url, held, now + PENALTY)
            elif held:
                stats.dropped += len(held)
                self._missed(held)

    def _add_batches(self, url: str, items: list[Item], due: float) -> None:
        size = self.settings.max_batch
        for start in range(0, len(items), size):
            self._batches.append(Batch(url, items[start : start + size], due))

    def _dispatch(self, now: float) -> None:
        self._batches.sort(key=lambda batch: batch.due)
        waiting: list[Batch] = []
        for batch in self._batches:
            if batch.due <= now and batch.url not in self._in_flight:
                self._in_flight.add(batch.url)
                task = asyncio.create_task(self._deliver(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                waiting.append(batch)
        self._batches = waiting

    def _sleep_for(self, now: float) -> float:
        times = [b.due for b in self._batches if b.url not in self._in_flight]
        times += [s.expires_at for s in self.state.subscriptions.values()]
        if not times:
            return _MAX_SLEEP
        return min(max(min(times) - now, 0.0), _MAX_SLEEP)

    def _missed(self, items: list[Item]) -> None:
        told: set[str] = set()
        for item in items:
            sub = self.state.subscriptions.get(item.subscription_id)
            if item.lifecycle or sub is None or sub.id in told:
                continue
            told.add(sub.id)
            self.lifecycle(sub, "missed")

    def _active(self, item: Item) -> bool:
        sub = self.state.subscriptions.get(item.subscription_id)
        return item.lifecycle or (sub is not None and sub.expires_at > self.state.now())

    async def _deliver(self, batch: Batch) -> None:
        try:
            batch.items = [item for item in batch.items if self._active(item)]
            if batch.items:
                await self._post(batch)
        finally:
            self._in_flight.discard(batch.url)
            self._progress.set()
            self.wake()

    async def _post(self, batch: Batch) -> None:
        assert self._session is not None
        stats = self._stats_for(batch.url)
        body = json.dumps({"value": [item.payload for item in batch.items]})
        timeout = self.settings.response_timeout
        started = self.state.now()
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(
                batch.url,
                data=body.encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            error = f"no answer within {timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        now = self.state.now()
        elapsed = now - started
        stats.posts += 1
        stats.last_status = status
        if status is not None:
            stats.health.record(now, elapsed)
            if elapsed > SLOW_AFTER:
                stats.slow += 1
            if elapsed > timeout:
                error = f"answered after {elapsed:.1f} s, more than {timeout:g} s"
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
        stats.last_error = error
        if error is None:
            stats.delivered += len(batch.items)
            return
        stats.failed_attempts += 1
        batch.attempts += 1
        batch.first_attempt = batch.first_attempt if batch.first_attempt is not None else started
        due = next_retry(batch.first_attempt, batch.attempts, now)
        if due is None:
            stats.dropped += len(batch.items)
            self._missed(batch.items)
            return
        stats.retries += 1
        batch.due = due
        self._batches.append(batch)

    def _stats_for(self, url: str) -> EndpointStats:
        found = self._stats.get(url)
        if found is None:
            found = self._stats[url] = EndpointStats(url)
        return found

    # -- introspection ---------------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        """Delivery statistics per notification URL."""
        now = self.state.now()
        pending: dict[str, int] = {}
        for batch in self._batches:
            pending[batch.url] = pending.get(batch.url, 0) + len(batch.items)
        for url, items in self._fresh.items():
            pending[url] = pending.get(url, 0) + len(items)
        return [
            stats.to_json(now, pending.get(url, 0)) for url, stats in sorted(self._stats.items())
        ]

    def busy(self) -> bool:
        """Whether anything is queued for now, in flight, or about to be looked at."""
        now = self.state.now()
        return bool(
            self._fresh
            or self._in_flight
            or self._wakeup.is_set()
            or any(batch.due <= now for batch in self._batches)
            or any(sub.expires_at <= now for sub in self.state.subscriptions.values())
        )

    async def settle(self) -> None:
        """Wait until everything due by now is delivered, retried later or dropped.

        Callers bound the wait (``asyncio.timeout``): an endpoint may take its time.
        """
        while self.busy():
            self._progress.clear()
            await self._progress.wait()


def _validation_error(message: str) -> GraphError:
    return GraphError(400, "ValidationError", message)
