"""NATS JetStream with nats-py: acknowledged publishes, ``Nats-Msg-Id`` = the event id.

A message is confirmed when the stream that stores its subject acknowledged it. JetStream
drops a message whose ``Nats-Msg-Id`` it has seen within the stream's duplicate window (two
minutes unless the stream says otherwise) and acknowledges it as a duplicate, so a retry
after a lost acknowledgement is stored once. A route's ``stream``, when set, is sent as
``Nats-Expected-Stream``: a subject that no longer belongs to that stream is refused.
The relay creates no stream: one whose subjects cover the route's must exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from relay import __version__
from relay.webhooks.sink_targets import BrokerUrl, nats_subject
from relay.webhooks.sinks.base import BATCH, Pending, Publisher
from relay.webhooks.ssrf import AddressPolicy

log = structlog.get_logger(__name__)


class JetStreamPublisher(Publisher):
    """One NATS connection; a batch is published asynchronously and its acks awaited."""

    def __init__(self, broker: BrokerUrl, policy: AddressPolicy, *, timeout: float) -> None:
        super().__init__(broker, policy, timeout=timeout)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lost = asyncio.Event()

    async def _connect(self, address: str) -> None:
        host = f"[{address}]" if ":" in address else address
        credentials: dict[str, Any] = {}
        if self.broker.username is not None and self.broker.password is not None:
            credentials = {"user": self.broker.username, "password": self.broker.password}
        elif self.broker.username is not None:  # nats://token@host
            credentials = {"token": self.broker.username}

        async def on_error(exc: Exception) -> None:
            log.debug("nats connection error", error=self._secretless(str(exc)))

        lost = self._lost = asyncio.Event()

        async def on_closed() -> None:
            lost.set()

        # No reconnects inside the client: a lost connection fails what is in flight, and the
        # next batch connects again (to an address checked again).
        self._nc = await nats.connect(
            servers=[f"nats://{host}:{self.broker.port}"],
            name=f"mailrelay/{__version__}",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=max(1, int(self.timeout)),
            error_cb=on_error,
            closed_cb=on_closed,
            disconnected_cb=on_closed,
            **credentials,
        )
        self._js = self._nc.jetstream(timeout=self.timeout, publish_async_max_pending=BATCH)

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            # The connection is being dropped either way.
            with contextlib.suppress(Exception):
                await nc.close()

    def _connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _publish(self, batch: Sequence[Pending]) -> None:
        assert self._js is not None
        acks: list[asyncio.Future[Any]] = []
        for pending in batch:
            m = pending.message
            headers = {**m.headers, "Nats-Msg-Id": m.event_id, "Content-Type": "application/json"}
            acks.append(
                await self._js.publish_async(
                    nats_subject(m.options.subject or "", m.event),
                    m.body,
                    headers=headers,
                    stream=m.options.stream,
                )
            )
        # nats-py leaves the acks of a closed connection pending: wait for them or the loss.
        lost = asyncio.ensure_future(self._lost.wait())
        every = asyncio.gather(*acks, return_exceptions=True)
        try:
            await asyncio.wait((every, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            for ack in acks:
                if not ack.done():
                    ack.cancel()
            await asyncio.gather(every, return_exceptions=True)
        if self._lost.is_set() and not all(a.done() and not a.cancelled() for a in acks):
            raise ConnectionError("the connection to NATS was lost")
        for pending, ack in zip(batch, acks, strict=True):
            exc = ack.exception() if not ack.cancelled() else None
            if ack.cancelled():
                pending.fail("no acknowledgement from JetStream")
            elif isinstance(exc, nats.js.errors.NoStreamResponseError):
                m = pending.message
                subject = nats_subject(m.options.subject or "", m.event)
                pending.fail(f"no JetStream stream takes subject {subject!r}")
            elif exc is not None:
                pending.fail(self._secretless(f"JetStream refused the message: {exc}"))
            else:
                result = ack.result()
                answer = f"stream {result.stream} seq {result.seq}"
                pending.confirm(answer + (" (duplicate; stored once)" if result.duplicate else ""))
