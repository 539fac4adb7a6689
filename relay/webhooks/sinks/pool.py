"""The node's broker connections: one :class:`Publisher` per broker address, made on first
use and kept for every later delivery to it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from relay.webhooks.sink_targets import AMQP, NATS, REDIS, address_key, parse_broker_url
from relay.webhooks.sinks.base import Publisher
from relay.webhooks.sinks.jetstream import JetStreamPublisher
from relay.webhooks.sinks.rabbitmq import RabbitPublisher
from relay.webhooks.sinks.redis_streams import RedisPublisher
from relay.webhooks.ssrf import AddressPolicy

_KINDS: dict[str, type[Publisher]] = {
    AMQP: RabbitPublisher,
    NATS: JetStreamPublisher,
    REDIS: RedisPublisher,
}


class Publishers:
    """Publishers by broker address (kind and URL, credentials included)."""

    def __init__(self, policy: AddressPolicy, *, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout
        self._by_address: dict[str, Publisher] = {}

    def get(self, kind: str, url: str) -> Publisher:
        """The publisher for the broker at ``url``, made now if there is none yet."""
        key = address_key(kind, url)
        publisher = self._by_address.get(key)
        if publisher is None:
            broker = parse_broker_url(kind, url)
            publisher = _KINDS[kind](broker, self.policy, timeout=self.timeout)
            self._by_address[key] = publisher
        return publisher

    async def keep_only(self, addresses: Iterable[tuple[str, str]]) -> None:
        """Close the connections of brokers that no route names any more."""
        keep = {address_key(kind, url) for kind, url in addresses}
        gone = [k for k in self._by_address if k not in keep]
        reason = "the route's broker changed; retried on the current one"
        await asyncio.gather(*(self._by_address.pop(k).close(reason) for k in gone))

    async def close(self) -> None:
        publishers, self._by_address = list(self._by_address.values()), {}
        await asyncio.gather(*(p.close() for p in publishers))
