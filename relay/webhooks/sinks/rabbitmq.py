"""RabbitMQ (AMQP 0-9-1) with aio-pika: publisher confirms, persistent, mandatory messages.

Each route publishes on its own channel of the broker's one connection (a channel that the
broker closes, e.g. for an exchange that does not exist, takes only that route's messages
down). A message is confirmed when the broker acked it; ``mandatory`` makes a message that no
queue is bound for come back as a failure instead of being dropped. The relay declares
nothing: the exchange, the queues and their bindings are the consumer's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import PublishError
from aiormq.exceptions import ChannelClosed, DeliveryError

from relay import __version__
from relay.webhooks.sink_targets import BrokerUrl, routing_key
from relay.webhooks.sinks.base import Pending, Publisher
from relay.webhooks.ssrf import AddressPolicy


class RabbitPublisher(Publisher):
    """One AMQP connection; a channel with publisher confirms per route."""

    def __init__(self, broker: BrokerUrl, policy: AddressPolicy, *, timeout: float) -> None:
        super().__init__(broker, policy, timeout=timeout)
        self._connection: AbstractConnection | None = None
        self._channels: dict[str, tuple[AbstractChannel, AbstractExchange]] = {}

    async def _connect(self, address: str) -> None:
        self._connection = await aio_pika.connect(
            host=address,
            port=self.broker.port,
            login=self.broker.username or "guest",
            password=self.broker.password or "guest",
            virtualhost=self.broker.path,
            timeout=self.timeout,
            client_properties={"connection_name": f"mailrelay/{__version__}"},
        )

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._channels.clear()
        if connection is not None:
            # The connection is being dropped either way.
            with contextlib.suppress(Exception):
                await connection.close()

    def _connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def _exchange(self, route_id: str, name: str) -> AbstractExchange:
        known = self._channels.get(route_id)
        if known is not None and not known[0].is_closed and known[1].name == name:
            return known[1]
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(name, ensure=False)
        self._channels[route_id] = (channel, exchange)
        return exchange

    async def _publish(self, batch: Sequence[Pending]) -> None:
        sends: list[asyncio.Task[object]] = []
        for pending in batch:
            m = pending.message
            exchange = await self._exchange(m.route_id, m.options.exchange or "")
            message = aio_pika.Message(
                m.body,
                headers=dict(m.headers),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=m.event_id,
                timestamp=m.timestamp,
                type=m.event,
                app_id="mailrelay",
            )
            key = routing_key(m.options.routing_key_prefix, m.event)
            # Tasks start in the order they are made, and the channel's lock is fair: the
            # messages go out in batch order, and their confirmations are awaited together.
            sends.append(
                asyncio.create_task(exchange.publish(message, routing_key=key, mandatory=True))
            )
        results = await asyncio.gather(*sends, return_exceptions=True)
        lost: BaseException | None = None
        for pending, result in zip(batch, results, strict=True):
            if not isinstance(result, BaseException):
                pending.confirm("confirmed by the broker")
            elif isinstance(result, PublishError):
                m = pending.message
                key = routing_key(m.options.routing_key_prefix, m.event)
                pending.fail(
                    f"unroutable: no queue is bound to exchange {m.options.exchange!r} for "
                    f"routing key {key!r} (the broker returned the message)"
                )
            elif isinstance(result, DeliveryError):
                pending.fail(f"the broker refused the message (nack): {result}")
            elif isinstance(result, ChannelClosed):
                self._channels.pop(pending.message.route_id, None)
                pending.fail(self._secretless(f"the broker closed the channel: {result}"))
            else:
                lost = lost or result
        if isinstance(lost, Exception):
            raise lost
        if lost is not None:  # a publish cancelled under us: the connection is in doubt
            raise ConnectionError("publishing was interrupted")
