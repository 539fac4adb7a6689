"""The message brokers queue sinks publish to, and a reader for each that verifies messages.

RabbitMQ and Redis are the machine's (127.0.0.1:5672 guest/guest, 127.0.0.1:6379);
``scripts/test-peers.sh`` makes sure they run. NATS with JetStream is started here, one
server per test process, on a free port with its store in a temporary folder
(:class:`NatsServer`), since a shared server may run without JetStream.

Each reader owns a uniquely named place on its broker (an exchange with a queue bound to
every routing key, a JetStream stream, a Redis stream key), gives the route fields that
publish there (:meth:`route`), reads everything published so far (:meth:`read`) and removes
what it made (:meth:`close`). Every message read is checked with the ``standardwebhooks``
package against the route's secret, so no check shares code with the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import nats
import redis.asyncio as aioredis
from nats.js.api import StreamConfig
from standardwebhooks import Webhook

from tests.proc import free_port

RABBIT = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Received:
    """One message as a consumer sees it."""

    id: str  # webhook-id
    event: str
    body: bytes
    headers: dict[str, str]
    where: str  # routing key, subject or stream key


class NatsServer:
    """``nats-server -js`` on a free port of 127.0.0.1; :meth:`stop` ends it by its PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.store_dir = Path(tempfile.mkdtemp(prefix="relay-nats-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"nats-server did not start: {err}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.store_dir, ignore_errors=True)


def _verified(secret: str, msg_id: str, body: bytes, headers: dict[str, str]) -> None:
    """Raises unless the Standard Webhooks signature over ``body`` holds."""
    Webhook(secret).verify(body, headers)
    assert headers["webhook-id"] == msg_id, (headers, msg_id)


class Reader:
    """What a test needs of a broker: the route fields, and the messages that arrived."""

    kind: str
    secret: str = ""

    def route(self, host: str, port: int) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def address(self) -> tuple[str, int]:
        raise NotImplementedError

    async def read(self) -> list[Received]:
        """Every message published so far, in the broker's order, each verified."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def count(self) -> int:
        """How many messages the broker holds (repeats included), without reading them."""
        raise NotImplementedError

    async def wait_for_count(self, n: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait until the broker holds at least ``n`` messages."""
        async with asyncio.timeout(timeout):
            while await self.count() < n:  # noqa: ASYNC110 - the broker is polled
                await asyncio.sleep(0.01)

    async def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:  # noqa: ASYNC109
        """Read until at least ``n`` distinct ids are there; TimeoutError says how many came."""
        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while time.monotonic() < deadline:
            got = await self.read()
            if len({m.id for m in got}) >= n:
                return got
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{len({m.id for m in got})} of {n} distinct messages arrived")


class AmqpReader(Reader):
    """A durable topic exchange and a queue bound to it for ``mail.#``."""

    kind = "amqp"

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.exchange_name = f"relay-test-{tag}"
        self.queue_name = f"relay-test-{tag}"
        self.prefix = "mail"
        self._conn: aio_pika.abc.AbstractConnection | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._got: list[Received] = []

    @property
    def address(self) -> tuple[str, int]:
        return RABBIT

    async def open(self) -> AmqpReader:
        self._conn = await aio_pika.connect(host=RABBIT[0], port=RABBIT[1])
        channel = await self._conn.channel()
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(self.queue_name, durable=True)
        await self._queue.bind(exchange, routing_key=f"{self.prefix}.#")
        return self

    async def count(self) -> int:
        assert self._conn is not None
        channel = await self._conn.channel()
        try:
            queue = await channel.declare_queue(self.queue_name, passive=True)
            return len(self._got) + int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    def route(self, host: str, port: int) -> dict[str, Any]:
        return {
            "type": "amqp",
            "url": f"amqp://guest:guest@{host}:{port}/",
            "exchange": self.exchange_name,
            "routingKeyPrefix": self.prefix,
        }

    async def read(self) -> list[Received]:
        assert self._queue is not None
        while (message := await self._queue.get(no_ack=True, fail=False)) is not None:
            headers = {k: str(v) for k, v in (message.headers or {}).items()}
            msg_id = str(message.message_id)
            _verified(self.secret, msg_id, message.body, headers)
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert message.routing_key == f"{self.prefix}.{message.type}"
            self._got.append(
                Received(msg_id, str(message.type), message.body, headers, message.routing_key)
            )
        return list(self._got)

    async def close(self) -> None:
        if self._conn is None:
            return
        channel = await self._conn.channel()
        with contextlib.suppress(Exception):
            await channel.queue_delete(self.queue_name)
            await channel.exchange_delete(self.exchange_name)
        await self._conn.close()


class NatsReader(Reader):
    """A JetStream stream taking ``<subject>.>``."""

    kind = "nats"

    def __init__(self, server: NatsServer) -> None:
        tag = secrets.token_hex(4)
        self.server = server
        self.stream = f"RELAY_{tag}"
        self.subject = f"relay.{tag}"
        self._nc: nats.aio.client.Client | None = None
        self._next = 1
        self._got: list[Received] = []

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.port)

    async def open(self) -> NatsReader:
        self._nc = await nats.connect(self.server.url)
        await self._nc.jetstream().add_stream(
            StreamConfig(name=self.stream, subjects=[f"{self.subject}.>"])
        )
        return self

    async def count(self) -> int:
        assert self._nc is not None
        return int((await self._nc.jetstream().stream_info(self.stream)).state.messages)

    def route(self, host: str, port: int) -> dict[str, Any]:
        return {
            "type": "nats",
            "url": f"nats://{host}:{port}",
            "subject": self.subject,
            "stream": self.stream,
        }

    async def read(self) -> list[Received]:
        assert self._nc is not None
        js = self._nc.jetstream()
        last = (await js.stream_info(self.stream)).state.last_seq
        while self._next <= last:
            raw = await js.get_msg(self.stream, self._next)
            self._next += 1
            headers = dict(raw.headers or {})
            msg_id = headers["Nats-Msg-Id"]
            body = raw.data or b""
            _verified(self.secret, msg_id, body, headers)
            event = str(raw.subject).removeprefix(self.subject + ".")
            self._got.append(Received(msg_id, event, body, headers, str(raw.subject)))
        return list(self._got)

    async def close(self) -> None:
        if self._nc is None:
            return
        with contextlib.suppress(Exception):
            await self._nc.jetstream().delete_stream(self.stream)
        await self._nc.close()


class RedisReader(Reader):
    """A stream key (and the relay's de-duplication keys beside it)."""

    kind = "redis"

    def __init__(self) -> None:
        self.stream = f"relay-test:{secrets.token_hex(4)}"
        self._client: aioredis.Redis | None = None
        self._after = "-"
        self._got: list[Received] = []

    @property
    def address(self) -> tuple[str, int]:
        return REDIS

    async def open(self) -> RedisReader:
        self._client = aioredis.Redis(host=REDIS[0], port=REDIS[1])
        await self._client.ping()
        return self

    async def count(self) -> int:
        assert self._client is not None
        return int(await self._client.xlen(self.stream))

    def route(self, host: str, port: int) -> dict[str, Any]:
        return {"type": "redis", "url": f"redis://{host}:{port}/0", "stream": self.stream}

    async def read(self) -> list[Received]:
        assert self._client is not None
        while entries := await self._client.xrange(self.stream, min=self._after, count=1000):
            for entry_id, fields in entries:
                text = {k.decode(): v for k, v in fields.items()}
                headers = {k: text[k].decode() for k in text if k.startswith("webhook-")}
                body = text["body"]
                _verified(self.secret, headers["webhook-id"], body, headers)
                self._got.append(
                    Received(headers["webhook-id"], text["event"].decode(), body, headers, "")
                )
                self._after = "(" + entry_id.decode()
        return list(self._got)

    async def close(self) -> None:
        if self._client is None:
            return
        keys = [self.stream]
        async for key in self._client.scan_iter(match=f"{self.stream}:dedupe:*", count=1000):
            keys.append(key)
        await self._client.delete(*keys)
        await self._client.aclose()
