"""One broker connection that publishes messages in the order they were submitted.

:meth:`Publisher.submit` queues messages and returns one future for their answers: the
broker's confirmation of each, or why it did not take it (its refusal, a lost connection or
the timeout, as :class:`SinkFailed`). One task per connection takes what is queued, a batch
at a time and in order, connects when there is no connection, publishes the batch pipelined
and waits for every confirmation. A failure that leaves the connection in doubt drops it;
the next batch connects again (to the address the name resolves to then, checked by the SSRF
policy).

A message whose confirmation was lost may have reached the broker: the delivery is retried
with the same event id, which is how consumers (or the broker, for NATS) recognise it.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import structlog

from relay.errors import DeliveryError
from relay.webhooks.sink_targets import BrokerUrl, SinkOptions
from relay.webhooks.ssrf import AddressPolicy, checked_address

log = structlog.get_logger(__name__)

# Messages published per round trip of confirmations at most.
BATCH = 512


class SinkFailed(DeliveryError):
    """The broker did not confirm a message; the text is what the delivery log shows."""


class SinkMessage(NamedTuple):
    """One message for a queue sink: the webhook body and its signature headers."""

    route_id: str
    options: SinkOptions
    event_id: str
    event: str
    account: str | None
    timestamp: int
    body: bytes
    # webhook-id, webhook-timestamp, webhook-signature (Standard Webhooks).
    headers: dict[str, str]


class Submission:
    """Messages submitted together, answered together: one future holds every answer (the
    broker's confirmation as text, or the :class:`SinkFailed` of a message it did not take),
    in the order submitted. The worker submits each claim's messages for a route at once:
    one wake-up for the batch, not one per message."""

    __slots__ = ("_left", "answers", "future")

    def __init__(self, count: int) -> None:
        self.future: asyncio.Future[list[str | SinkFailed]] = (
            asyncio.get_running_loop().create_future()
        )
        self.answers: list[str | SinkFailed | None] = [None] * count
        self._left = count
        if not count:
            self.future.set_result([])

    def settle(self, index: int, answer: str | SinkFailed) -> None:
        if self.answers[index] is not None:
            return
        self.answers[index] = answer
        self._left -= 1
        if not self._left and not self.future.done():
            self.future.set_result([a for a in self.answers if a is not None])


@dataclass(slots=True)
class Pending:
    message: SinkMessage
    submission: Submission
    index: int

    @property
    def settled(self) -> bool:
        """Answered already, or no longer waited for (the submitter was cancelled)."""
        return self.submission.answers[self.index] is not None or self.submission.future.done()

    def confirm(self, answer: str) -> None:
        self.submission.settle(self.index, answer)

    def fail(self, error: str) -> None:
        self.submission.settle(self.index, SinkFailed(error))


class Publisher(ABC):
    """A connection to one broker (kind and URL), reused by every delivery to it."""

    def __init__(self, broker: BrokerUrl, policy: AddressPolicy, *, timeout: float) -> None:
        self.broker = broker
        self.policy = policy
        self.timeout = timeout
        self._queue: deque[Pending] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- what each kind implements -----------------------------------------------------------

    @abstractmethod
    async def _connect(self, address: str) -> None:
        """Open the connection to ``address`` (an IP the policy allowed)."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close the connection, if any; never raises."""

    @abstractmethod
    def _connected(self) -> bool:
        """Whether the connection is open, as far as the client knows."""

    @abstractmethod
    async def _publish(self, batch: Sequence[Pending]) -> None:
        """Publish ``batch`` in order and settle each one (``confirm`` with the broker's
        answer, or ``fail``). Raise when the connection itself failed: the messages not
        settled yet fail with that error and the connection is dropped."""

    # -- the loop ----------------------------------------------------------------------------

    def submit(self, messages: Sequence[SinkMessage]) -> asyncio.Future[list[str | SinkFailed]]:
        """Queue ``messages``; the future's result is each one's answer, in order: the
        broker's confirmation as text, or the :class:`SinkFailed` saying why not.

        Messages are published in the order of the calls, and in order within one.
        """
        submission = Submission(len(messages))
        pending = [Pending(m, submission, i) for i, m in enumerate(messages)]
        if self._closed:
            for p in pending:
                p.fail("the relay is shutting down")
            return submission.future
        self._queue.extend(pending)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"sink.{self.broker.kind}")
        return submission.future

    async def close(self, reason: str = "the relay is shutting down") -> None:
        """Fail what is queued (saying ``reason``), stop the loop, close the connection."""
        self._closed = True
        while self._queue:
            self._queue.popleft().fail(reason)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    def _secretless(self, text: str) -> str:
        """``text`` with the broker's password cut out (client errors may quote a URL)."""
        password = self.broker.password
        return text.replace(password, "***") if password else text

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                batch = [p for p in batch if not p.settled]  # cancelled meanwhile
                if batch:
                    await self._send(batch)

    async def _send(self, batch: list[Pending]) -> None:
        stage = "connecting to"
        try:
            async with asyncio.timeout(self.timeout):
                if not self._connected():
                    await self._disconnect()
                    address = await checked_address(self.broker.host, self.broker.port, self.policy)
                    await self._connect(address)
                stage = "publishing to"
                await self._publish(batch)
        except TimeoutError:
            self._fail(batch, f"timed out after {self.timeout:g} s {stage} the broker")
        except asyncio.CancelledError:
            self._fail(batch, "the relay is shutting down")
            raise
        except Exception as exc:  # any client error fails the batch
            detail = str(exc) or exc.__class__.__name__
            if isinstance(exc, DeliveryError):  # ours (SSRF): the message says it all
                self._fail(batch, self._secretless(detail))
            else:
                self._fail(
                    batch, self._secretless(f"{stage} the broker: {type(exc).__name__}: {detail}")
                )
        else:
            return
        await self._disconnect()

    def _fail(self, batch: Sequence[Pending], error: str) -> None:
        unsettled = [p for p in batch if not p.settled]
        if unsettled:
            log.info(
                "sink publish failed",
                kind=self.broker.kind,
                host=self.broker.host,
                count=len(unsettled),
                error=error,
            )
        for pending in unsettled:
            pending.fail(error)
