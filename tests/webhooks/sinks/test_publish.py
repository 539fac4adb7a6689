"""Queue sinks end to end: stored events published to RabbitMQ, NATS JetStream and Redis."""

from __future__ import annotations

from collections import defaultdict

import pytest

from relay.config import Settings
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.brokers import Reader
from tests.peers.tcpproxy import tcp_proxy
from tests.webhooks.sinks.conftest import sink_setup


async def test_each_event_is_published_once_in_order_per_account(
    make_client: MakeClient, settings: Settings, reader: Reader
) -> None:
    """Events of two accounts, stored in turns, are in the queue once each, each account's
    in the order stored, with the webhook body and a verifiable signature; the delivery log
    records the broker's confirmation."""
    setup = await sink_setup(make_client, settings, reader)
    order: dict[str, list[str]] = defaultdict(list)
    for _ in range(4):
        for account in ("a", "b"):
            order[account] += await setup.emit(25, account=account)
    total = sum(len(ids) for ids in order.values())
    await setup.settled(total)
    got = await reader.read()
    assert len(got) == total, "each event exactly once"
    stored = await setup.payloads()
    account_of = {i: a for a, ids in order.items() for i in ids}
    seen: dict[str, list[str]] = defaultdict(list)
    for message in got:
        assert message.body == stored[message.id]
        assert message.event == "messageNew"
        seen[account_of[message.id]].append(message.id)
    assert seen == order
    delivery = (await setup.deliveries("delivered"))[0]
    attempt = delivery["attemptLog"][0]
    assert delivery["attempts"] == 1
    assert "statusCode" not in attempt
    assert attempt["responseBody"], "the broker's answer is logged"


async def test_connection_cut_mid_burst_loses_nothing(
    make_client: MakeClient, settings: Settings, reader: Reader
) -> None:
    """The broker connection cut twice while a burst is published: every event arrives;
    a repeat is only ever the same event again (and NATS and Redis store none)."""
    async with tcp_proxy(*reader.address) as proxy:
        setup = await sink_setup(make_client, settings, reader, address=(proxy.host, proxy.port))
        ids: list[str] = []
        for _ in range(2):
            ids += await setup.emit(300)
            await reader.wait_for(len(ids) - 200)
            await proxy.drop_connections()
        ids += await setup.emit(100)
        await setup.settled(len(ids), timeout=40)
        got = await reader.read()
    assert {m.id for m in got} == set(ids)
    stored = await setup.payloads()
    assert all(m.body == stored[m.id] for m in got), "a repeat carries the same body"
    if reader.kind in ("nats", "redis"):
        assert len(got) == len(ids), "de-duplicated by the event id"
    assert proxy.accepted >= 3, "connected again after each cut"


@pytest.mark.parametrize("reader", ["amqp", "nats", "redis"], indirect=True)
async def test_loopback_broker_refused_without_allow_networks(
    make_client: MakeClient, settings: Settings, reader: Reader
) -> None:
    """The SSRF guard applies to broker hosts: loopback is refused unless allowed, the log
    says how to allow it, and nothing is published."""
    setup = await sink_setup(make_client, settings, reader, allow_loopback=False)
    await setup.emit(1)
    error = await setup.first_error()
    assert "is not allowed (loopback)" in error, error
    assert "allow_networks" in error
    assert "broker host 127.0.0.1" in error or "address 127.0.0.1" in error
    assert await reader.read() == []


async def test_test_endpoint_publishes_a_test_event(
    make_client: MakeClient, settings: Settings, reader: Reader
) -> None:
    """POST /v1/webhooks/{id}/test on a sink route publishes a `test` event and reports the
    broker's confirmation."""
    setup = await sink_setup(make_client, settings, reader)
    result = await call(setup.client, "POST", f"/v1/webhooks/{setup.route['id']}/test")
    assert result["status"] == "delivered", result
    got = await reader.wait_for(1)
    assert [m.event for m in got] == ["test"]
    assert got[0].id == result["eventId"]


@pytest.mark.parametrize("reader", ["amqp"], indirect=True)
async def test_amqp_unroutable_is_retried_until_a_queue_is_bound(
    make_client: MakeClient, settings: Settings, reader: Reader
) -> None:
    """A message no queue is bound for comes back (mandatory): the attempt fails saying so,
    and once a queue takes the routing key the retry is delivered."""
    setup = await sink_setup(make_client, settings, reader, routingKeyPrefix="elsewhere")
    [event_id] = await setup.emit(1)
    assert "unroutable" in await setup.first_error()
    await call(
        setup.client,
        "PUT",
        f"/v1/webhooks/{setup.route['id']}",
        {"routingKeyPrefix": "mail"},
    )
    [message] = await reader.wait_for(1)
    assert message.id == event_id


@pytest.mark.parametrize("reader", ["nats"], indirect=True)
async def test_nats_subject_without_a_stream_is_retried(
    make_client: MakeClient, settings: Settings, reader: Reader
) -> None:
    """A subject no JetStream stream takes fails the attempt with that reason; pointed at
    the stream's subjects, the retry is delivered."""
    setup = await sink_setup(make_client, settings, reader, subject="nowhere", stream=None)
    await setup.emit(1)
    error = await setup.first_error()
    assert "no JetStream stream takes subject 'nowhere.messageNew'" in error
    subject = reader.route("127.0.0.1", 0)["subject"]
    await call(setup.client, "PUT", f"/v1/webhooks/{setup.route['id']}", {"subject": subject})
    assert len(await reader.wait_for(1)) == 1
