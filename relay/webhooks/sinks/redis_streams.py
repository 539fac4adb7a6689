"""Redis Streams with redis-py's asyncio client: ``XADD``, pipelined, de-duplicated.

A stream entry's id is Redis's to choose (it must grow), so the event id cannot be the entry
id. Instead each message is added by a small Lua script that runs atomically: it adds the
entry only when ``<stream>:dedupe:<event id>`` does not exist, and sets that key (holding the
entry id, expiring after :data:`DEDUPE_SECONDS`). A retry after a lost reply (the connection
cut after Redis added the entry) therefore adds nothing. Beyond that window a retry adds the
event again, under the same ``webhook-id``.

The fields of an entry: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``,
``event``, ``account`` (empty for none) and ``body`` (the webhook body).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.webhooks.sink_targets import BrokerUrl
from relay.webhooks.sinks.base import Pending, Publisher
from relay.webhooks.ssrf import AddressPolicy

DEDUPE_SECONDS = 900

_ADD = """
local seen = redis.call('GET', KEYS[2])
if seen then return {seen, 1} end
local id
if ARGV[2] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
end
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 0}
"""


def dedupe_key(stream: str, event_id: str) -> str:
    """The key that marks ``event_id`` as added to ``stream``."""
    return f"{stream}:dedupe:{event_id}"


class RedisPublisher(Publisher):
    """One Redis connection; each batch is one pipeline of script calls."""

    def __init__(self, broker: BrokerUrl, policy: AddressPolicy, *, timeout: float) -> None:
        super().__init__(broker, policy, timeout=timeout)
        self._client: aioredis.Redis | None = None

    async def _connect(self, address: str) -> None:
        client = aioredis.Redis(
            host=address,
            port=self.broker.port,
            db=int(self.broker.path or 0),
            username=self.broker.username,
            password=self.broker.password,
            # No per-read timeout in the client: Publisher._send bounds the whole round trip
            # (and drops the connection when it runs out). redis-py arms a timer for every
            # reply it reads, which cost this path about a sixth of its deliveries a second.
            socket_timeout=None,
            socket_connect_timeout=self.timeout,
            # One connection, used by one pipeline at a time; no silent retries: a command
            # sent again after a lost reply is the delivery's retry to make, not the client's.
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
            client_name="mailrelay",
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # The connection is being dropped either way.
            with contextlib.suppress(Exception):
                await client.aclose()

    def _connected(self) -> bool:
        return self._client is not None

    async def _publish(self, batch: Sequence[Pending]) -> None:
        assert self._client is not None
        script = self._client.register_script(_ADD)
        # The pipeline is closed however its round trip ends (a cut connection included).
        async with self._client.pipeline(transaction=False) as pipe:
            window = str(DEDUPE_SECONDS * 1000)
            for pending in batch:
                m = pending.message
                stream = m.options.stream or ""
                fields: list[str | bytes] = []
                for name, value in m.headers.items():
                    fields += [name, value]
                fields += ["event", m.event, "account", m.account or "", "body", m.body]
                await script(
                    keys=[stream, dedupe_key(stream, m.event_id)],
                    args=[window, str(m.options.max_len or 0), *fields],
                    client=pipe,
                )
            results = await pipe.execute(raise_on_error=False)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, (RedisConnectionError, RedisTimeoutError)):
                raise result
            if isinstance(result, BaseException):
                pending.fail(self._secretless(f"redis refused the entry: {result}"))
                continue
            entry, duplicate = result
            entry = entry.decode() if isinstance(entry, bytes) else str(entry)
            pending.confirm(
                f"entry {entry}" + (" (added before; not added again)" if duplicate else "")
            )
