"""Queue sink throughput: the relay's delivery path against a bare client, per broker.

For each kind (RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379, and a JetStream
nats-server started here on a free port) and each round: the bare client publishes N
messages with the same guarantees as the relay (RabbitMQ: publisher confirms, persistent,
mandatory; NATS: JetStream acks with ``Nats-Msg-Id``; Redis: the relay's de-duplicating
``XADD`` script, pipelined), ``CONCURRENCY`` in flight; then N events are stored (SQLite)
for a route of that kind and a DeliveryWorker is started: the rate from its start until
every delivery is recorded delivered (claim, sign, publish, broker confirmation, outcome
written). Bodies and signature headers are the same in both. The figures are medians over
the rounds, ``ratio`` the median of each round's relay / bare. Prints one JSON line:
``{amqp: {relay_per_s, bare_per_s, ratio, ratio_range}, nats: {...}, redis: {...},
events, rounds, goals}``.

    python bench/sinks.py [--events 10000] [--rounds 3] [--kinds amqp,nats,redis]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
import nats
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.api.webhooks import RouteCreate, create_route_row  # noqa: E402
from relay.auth.crypto import Cipher, derive_key  # noqa: E402
from relay.config import StoreSettings, WebhookSettings  # noqa: E402
from relay.events.model import Event  # noqa: E402
from relay.metrics import Metrics  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store import events as events_store  # noqa: E402
from relay.store.engine import now_ms  # noqa: E402
from relay.store.migrate import migrate  # noqa: E402
from relay.webhooks.signing import new_route_secret, sink_headers  # noqa: E402
from relay.webhooks.sinks.redis_streams import _ADD, DEDUPE_SECONDS, dedupe_key  # noqa: E402
from relay.webhooks.worker import DeliveryWorker  # noqa: E402
from tests.peers.brokers import (  # noqa: E402
    AmqpReader,
    NatsReader,
    NatsServer,
    Reader,
    RedisReader,
)

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "256"))
GOAL = 0.7
BODY = json.dumps(
    {
        "serviceUrl": "https://relay.example.com",
        "account": "acct",
        "date": "2026-11-24T10:00:00.000Z",
        "path": "INBOX",
        "event": "messageNew",
        "data": {"id": "x" * 40, "subject": "Benchmark", "n": 0},
    }
).encode()


def _headers(msg_id: str) -> dict[str, str]:
    return sink_headers(
        msg_id=msg_id, timestamp=int(time.time()), body=BODY, route_secrets=(SECRET,)
    )


SECRET = new_route_secret()


async def bare_amqp(reader: AmqpReader, n: int, round_no: int) -> float:
    conn = await aio_pika.connect(host="127.0.0.1")
    try:
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(reader.exchange_name, ensure=False)
        window = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            msg_id = f"bare-{round_no}-{i}"
            message = aio_pika.Message(
                BODY,
                headers=dict(_headers(msg_id)),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=msg_id,
                type="messageNew",
            )
            try:
                await exchange.publish(message, routing_key="mail.messageNew", mandatory=True)
            finally:
                window.release()

        started = time.perf_counter()
        tasks = []
        for i in range(n):
            await window.acquire()
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return n / (time.perf_counter() - started)
    finally:
        await conn.close()


async def bare_nats(reader: NatsReader, n: int, round_no: int) -> float:
    nc = await nats.connect(reader.server.url)
    try:
        js = nc.jetstream(publish_async_max_pending=CONCURRENCY)
        started = time.perf_counter()
        acks = []
        for i in range(n):
            msg_id = f"bare-{round_no}-{i}"
            headers = {**_headers(msg_id), "Nats-Msg-Id": msg_id}
            acks.append(
                await js.publish_async(
                    f"{reader.subject}.messageNew", BODY, headers=headers, stream=reader.stream
                )
            )
        await asyncio.gather(*acks)
        return n / (time.perf_counter() - started)
    finally:
        await nc.close()


async def bare_redis(reader: RedisReader, n: int, round_no: int) -> float:
    client = aioredis.Redis(host="127.0.0.1", port=6379, single_connection_client=True)
    try:
        script = client.register_script(_ADD)
        window = str(DEDUPE_SECONDS * 1000)
        started = time.perf_counter()
        for start in range(0, n, CONCURRENCY):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + CONCURRENCY)):
                msg_id = f"bare-{round_no}-{i}"
                fields: list[str | bytes] = []
                for name, value in _headers(msg_id).items():
                    fields += [name, value]
                fields += ["event", "messageNew", "account", "acct", "body", BODY]
                await script(
                    keys=[reader.stream, dedupe_key(reader.stream, msg_id)],
                    args=[window, "0", *fields],
                    client=pipe,
                )
            await pipe.execute()
        return n / (time.perf_counter() - started)
    finally:
        await client.aclose()


BARE = {"amqp": bare_amqp, "nats": bare_nats, "redis": bare_redis}


async def relay_run(reader: Reader, tmp: str, n: int, round_no: int) -> float:
    """Store ``n`` events for a route to ``reader``'s broker, then drain them with a worker."""
    store = Store.open(StoreSettings(url=f"sqlite:///{tmp}/{reader.kind}-{round_no}.db"))
    try:
        await migrate(store)
        cipher = Cipher(derive_key("bench-secret-value"))
        route = RouteCreate.model_validate(reader.route(*reader.address))
        async with store.write() as conn:
            await create_route_row(conn, cipher, "bench", route)
        for start in range(0, n, 500):
            batch = [
                Event("messageNew", "acct", {"n": i}, now_ms())
                for i in range(start, min(n, start + 500))
            ]
            async with store.write() as conn:
                await events_store.record(
                    conn, batch, default_service_url="https://relay.example.com"
                )
        settings = WebhookSettings(
            allow_networks=("127.0.0.0/8",),
            concurrency=CONCURRENCY,
            route_concurrency=CONCURRENCY,
            batch_size=512,
        )
        worker = DeliveryWorker(store, cipher, settings, Metrics.create())
        started = time.perf_counter()
        await worker.start()
        try:
            # The worker runs in this process: its counter is what the store recorded.
            while worker.counters.delivered < n:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            finished = time.perf_counter()
        finally:
            await worker.stop(10)
        assert worker.counters.failed == 0
        assert worker.counters.retried == 0
        return n / (finished - started)
    finally:
        await store.close()


async def bench_kind(reader: Reader, tmp: str, n: int, rounds: int) -> dict[str, Any]:
    bare_rates: list[float] = []
    relay_rates: list[float] = []
    for round_no in range(rounds):
        bare_rates.append(await BARE[reader.kind](reader, n, round_no))  # type: ignore[operator]
        relay_rates.append(await relay_run(reader, tmp, n, round_no))
    ratios = sorted(r / b for r, b in zip(relay_rates, bare_rates, strict=True))
    expected = 2 * n * rounds
    held = await reader.count()
    assert held == expected, f"{reader.kind}: {held} messages, expected {expected}"
    return {
        "relay_per_s": round(statistics.median(relay_rates)),
        "bare_per_s": round(statistics.median(bare_rates)),
        "ratio": round(statistics.median(ratios), 2),
        "ratio_range": [round(ratios[0], 2), round(ratios[-1], 2)],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10000, help="messages per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="amqp,nats,redis")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    tmp = tempfile.mkdtemp(prefix="relay-bench-sinks-")
    # As `relay serve` does once started (relay.cli): start-up's objects leave the garbage
    # collector's full passes, for the bare clients and the worker alike.
    gc.freeze()
    server = NatsServer()
    server.start()
    result: dict[str, Any] = {}
    try:
        for kind in kinds:
            reader: Reader
            if kind == "amqp":
                reader = await AmqpReader().open()
            elif kind == "nats":
                reader = await NatsReader(server).open()
            else:
                reader = await RedisReader().open()
            try:
                result[kind] = await bench_kind(reader, tmp, args.events, args.rounds)
            finally:
                await reader.close()
    finally:
        server.stop()
    met = all(r["ratio"] >= GOAL for r in result.values())
    print(
        json.dumps(
            {
                **result,
                "events": args.events,
                "rounds": args.rounds,
                "concurrency": CONCURRENCY,
                "goals": {"ratio": GOAL, "met": met},
            }
        )
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
