"""``GET /v1/cluster`` and the cluster gauges of ``/metrics``: the nodes sharing the store,
their liveness and their work, as read from the store by whichever node answers.

Other nodes are rows written straight into ``cluster_nodes`` (and their work into
``account_leases``, ``deliveries`` and ``outbox``), as those nodes would have written them.
The accounts they hold are ones the rendezvous hash gives to a live peer, so this node's own
scans never take them over while the test looks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete
from sqlalchemy.engine import RowMapping

from relay.api.cluster import ClusterNode, cluster_nodes
from relay.api.keys import NODE, STORE
from relay.auth.grants import Permission
from relay.config import ClusterSettings, Settings
from relay.sources.assignment import owner
from relay.store import nodes as nodes_store
from relay.store.engine import now_ms
from relay.store.schema import (
    DeliveryStatus,
    OutboxStatus,
    account_leases,
    deliveries,
    events,
    outbox,
    webhook_routes,
)
from relay.store.schema import (
    cluster_nodes as cluster_nodes_table,
)
from tests.api.helpers import call
from tests.api.test_permissions import everything_but, mint, send
from tests.conftest import MakeClient
from tests.sources.conftest import add

NODE_ID = "node-a"
ADDRESS = "http://10.0.0.1:3000"
MINUTE = 60_000


@pytest.fixture
def node_settings(settings: Settings) -> Settings:
    """A node that registers (its supervisor runs), with its id and address set; no
    delivery or send worker touches the queue rows the tests write."""
    return dataclasses.replace(
        settings,
        imap=dataclasses.replace(settings.imap, watch=True),
        webhooks=dataclasses.replace(settings.webhooks, deliver=False),
        send=dataclasses.replace(settings.send, deliver=False),
        cluster=ClusterSettings(node_id=NODE_ID, address=ADDRESS),
    )


def parse(iso: str) -> datetime:
    assert iso.endswith("Z"), iso
    return datetime.fromisoformat(iso)


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def add_node(
    client: TestClient, node: str, *, started_ms: int, heartbeat_ms: int, leaving: bool = False
) -> None:
    async with client.server.app[STORE].write() as conn:
        await conn.execute(
            cluster_nodes_table.insert().values(
                id=node,
                address=f"http://{node}:3000",
                started_ms=started_ms,
                heartbeat_ms=heartbeat_ms,
                leaving=leaving,
            )
        )


async def add_account(client: TestClient, account: str) -> None:
    """An IMAP account whose server refuses connections."""
    await add(client.server.app[STORE], account)


def accounts_of(node: str, live: list[str], count: int) -> list[str]:
    """``count`` account ids the rendezvous hash gives to ``node`` among ``live``."""
    found = [a for a in (f"acct-{i}" for i in range(1000)) if owner(a, live) == node]
    return found[:count]


async def add_lease(client: TestClient, account: str, node: str, expires_ms: int) -> None:
    async with client.server.app[STORE].write() as conn:
        await conn.execute(
            account_leases.insert().values(
                account=account, node=node, expires_ms=expires_ms, epoch=1
            )
        )


async def add_deliveries(client: TestClient, claims: list[tuple[str, str | None]]) -> None:
    """One delivery per ``(status, claimed_by)`` (of one event to one route)."""
    ms = now_ms()
    async with client.server.app[STORE].write() as conn:
        await conn.execute(
            webhook_routes.insert().values(
                id="r1",
                url="https://hooks.example.com/",
                events=["*"],
                accounts=None,
                headers={},
                enabled=1,
                ordering="none",
                secret=b"x",
                created_ms=ms,
                updated_ms=ms,
            )
        )
        await conn.execute(
            events.insert().values(
                id="evt-1", account=None, event="messageNew", created_ms=ms, payload="{}"
            )
        )
        for status, node in claims:
            await conn.execute(
                deliveries.insert().values(
                    route_id="r1",
                    event_id="evt-1",
                    status=status,
                    lane=0,
                    attempts=1,
                    next_attempt_ms=ms,
                    lease_until_ms=ms + 10 * MINUTE,
                    claimed_by=node,
                    created_ms=ms,
                    updated_ms=ms,
                )
            )


async def add_outbox(client: TestClient, claims: list[tuple[str, str | None]]) -> None:
    """One queued message per ``(status, claimed_by)``."""
    ms = now_ms()
    async with client.server.app[STORE].write() as conn:
        for i, (status, node) in enumerate(claims):
            await conn.execute(
                outbox.insert().values(
                    queue_id=f"q{i}",
                    account="someone",
                    message_id=f"<m{i}@example.com>",
                    subject="hello",
                    envelope={"from": "a@example.com", "to": ["b@example.com"]},
                    raw=b"Subject: hello\r\n\r\nhi\r\n",
                    size=24,
                    status=status,
                    attempts=0,
                    max_attempts=3,
                    send_at_ms=ms,
                    next_attempt_ms=ms,
                    lease_until_ms=ms + 10 * MINUTE,
                    claimed_by=node,
                    created_ms=ms,
                    updated_ms=ms,
                )
            )


def gauges(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The cluster samples of a /metrics page, by name and labels."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("relay_cluster_"):
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def work(node: str, kind: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return ("relay_cluster_node_work", frozenset({("node", node), ("kind", kind)}))


def alive(value: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return ("relay_cluster_nodes", frozenset({("alive", value)}))


async def test_a_node_lists_itself(make_client: MakeClient, node_settings: Settings) -> None:
    """A started node is listed under its configured id and address: alive, not leaving,
    started and beating since it started, with no work."""
    before = datetime.now(UTC).replace(microsecond=0)
    client = await make_client(node_settings)
    body = await call(client, "GET", "/v1/cluster")
    after = datetime.now(UTC)
    assert body["engine"] == client.server.app[STORE].dialect
    assert body["node"] == NODE_ID
    (me,) = body["nodes"]
    started, beat = parse(me.pop("startedAt")), parse(me.pop("heartbeatAt"))
    assert me == {
        "id": NODE_ID,
        "address": ADDRESS,
        "alive": True,
        "leaving": False,
        "accounts": 0,
        "deliveries": 0,
        "outbox": 0,
    }
    assert before <= started <= beat <= after


async def test_without_a_node_id_one_is_made_up(
    make_client: MakeClient, node_settings: Settings
) -> None:
    """Without ``cluster.node_id`` the node names itself (host, process, random suffix) and
    is listed under that name, at the address it listens on."""
    config = dataclasses.replace(node_settings, cluster=ClusterSettings())
    client = await make_client(config)
    body = await call(client, "GET", "/v1/cluster")
    node = client.server.app[NODE]
    assert node.rsplit(":", 1)[0] == nodes_store.new_id().rsplit(":", 1)[0]
    assert body["node"] == node
    assert [(n["id"], n["address"], n["alive"]) for n in body["nodes"]] == [
        (node, "http://127.0.0.1:3000", True)
    ]


async def test_other_nodes_their_liveness_and_their_work(
    make_client: MakeClient, node_settings: Settings
) -> None:
    """Nodes beating within ``imap.lease`` and not leaving are alive, the others are not;
    each node's accounts are its unexpired leases, its deliveries the ones in flight it
    claimed, its outbox the messages it is sending. /metrics shows the same."""
    client = await make_client(node_settings)
    lease_ms = int(node_settings.imap.lease * 1000)
    ms = now_ms()
    await add_node(client, "dead", started_ms=ms - 30 * MINUTE, heartbeat_ms=ms - 5 * lease_ms)
    await add_node(client, "leaving", started_ms=ms - 20 * MINUTE, heartbeat_ms=ms, leaving=True)
    await add_node(client, "peer", started_ms=ms - 10 * MINUTE, heartbeat_ms=ms)
    # All the peer's by the hash: this node's scans leave these leases alone.
    p1, p2, p3, d1, d2 = accounts_of("peer", sorted([NODE_ID, "peer"]), 5)
    for account in (p1, p2, p3, d1, d2):
        await add_account(client, account)
    await add_lease(client, p1, "peer", ms + 10 * MINUTE)
    await add_lease(client, p2, "peer", ms + 10 * MINUTE)
    await add_lease(client, p3, "peer", ms - MINUTE)  # ran out: not counted
    await add_lease(client, d1, "dead", ms + 10 * MINUTE)  # outlives its node for a while
    await add_lease(client, d2, "dead", ms - MINUTE)
    await add_deliveries(
        client,
        [
            (DeliveryStatus.INFLIGHT, "peer"),
            (DeliveryStatus.INFLIGHT, "peer"),
            (DeliveryStatus.INFLIGHT, "dead"),
            (DeliveryStatus.DELIVERED, "peer"),  # done: not in flight
            (DeliveryStatus.PENDING, None),
        ],
    )
    await add_outbox(
        client,
        [
            (OutboxStatus.SENDING, "leaving"),
            (OutboxStatus.SENT, "leaving"),
            (OutboxStatus.QUEUED, None),
        ],
    )

    body = await call(client, "GET", "/v1/cluster")
    listed = {
        n["id"]: (n["alive"], n["leaving"], n["accounts"], n["deliveries"], n["outbox"])
        for n in body["nodes"]
    }
    assert listed == {
        "dead": (False, False, 1, 1, 0),
        "leaving": (False, True, 0, 0, 1),
        "peer": (True, False, 2, 2, 0),
        NODE_ID: (True, False, 0, 0, 0),
    }
    # Oldest first.
    assert [n["id"] for n in body["nodes"]] == ["dead", "leaving", "peer", NODE_ID]
    dead = body["nodes"][0]
    assert dead["address"] == "http://dead:3000"
    assert millis(parse(dead["heartbeatAt"])) == ms - 5 * lease_ms
    assert millis(parse(dead["startedAt"])) == ms - 30 * MINUTE

    metrics = gauges(await (await client.get("/metrics")).text())
    assert metrics[alive("true")] == 2
    assert metrics[alive("false")] == 2
    assert metrics[work("peer", "accounts")] == 2
    assert metrics[work("dead", "accounts")] == 1
    assert metrics[work("peer", "deliveries")] == 2
    assert metrics[work("leaving", "outbox")] == 1
    assert metrics[work(NODE_ID, "accounts")] == 0

    # A node whose row is gone disappears from the gauges too.
    async with client.server.app[STORE].write() as conn:
        await conn.execute(delete(cluster_nodes_table).where(cluster_nodes_table.c.id == "dead"))
    metrics = gauges(await (await client.get("/metrics")).text())
    assert not any(dict(labels).get("node") == "dead" for _, labels in metrics)
    assert metrics[alive("false")] == 1
    assert metrics[work("peer", "accounts")] == 2


async def test_reading_the_cluster_needs_settings_read(
    make_client: MakeClient, node_settings: Settings
) -> None:
    """A token without ``settings:read`` gets 403 naming it; one with only that gets the list."""
    client = await make_client(node_settings)
    permission = Permission("settings", "read")
    lacking = await mint(client, permissions=everything_but(permission))
    status, body = await send(client, "GET", "/v1/cluster", lacking)
    assert status == 403, body
    assert str(permission) in body["message"]
    exact = await mint(client, permissions={"settings": frozenset({"read"})})
    status, body = await send(client, "GET", "/v1/cluster", exact)
    assert status == 200, body
    assert [n["id"] for n in body["nodes"]] == [NODE_ID]


NOW = 1_800_000_000_000
LEASE = 30_000


def row(node: str, heartbeat_ms: int, *, leaving: bool = False) -> RowMapping:
    """A ``cluster_nodes`` row as the store reads it (a mapping of its columns)."""
    values: Mapping[str, Any] = {
        "id": node,
        "address": f"http://{node}",
        "started_ms": 1_700_000_000_000,
        "heartbeat_ms": heartbeat_ms,
        "leaving": leaving,
    }
    return cast(RowMapping, values)


@pytest.mark.parametrize(
    ("heartbeat_ms", "leaving", "is_alive"),
    [
        (NOW, False, True),
        (NOW - LEASE, False, True),  # exactly one lease ago: still alive
        (NOW - LEASE - 1, False, False),
        (NOW - 10 * LEASE, False, False),
        (NOW, True, False),  # leaving: out of the assignment at once
        (NOW - LEASE - 1, True, False),
        (NOW + 5_000, False, True),  # a clock a little ahead of ours
    ],
)
def test_liveness(heartbeat_ms: int, leaving: bool, is_alive: bool) -> None:
    """A node is alive while its heartbeat is at most one lease old and it is not leaving."""
    (node,) = cluster_nodes(
        [row("n1", heartbeat_ms, leaving=leaving)],
        {},
        now=NOW,
        lease_ms=LEASE,
    )
    assert node.alive is is_alive
    assert node.leaving is leaving


def test_nodes_as_shown() -> None:
    """Rows become nodes in their order, with ISO times and their work (zero when none)."""
    rows = [row("n1", NOW), row("n2", NOW - 2 * LEASE)]
    work = {"n2": {"accounts": 3, "deliveries": 1, "outbox": 2}, "gone": {"accounts": 9}}
    assert cluster_nodes(rows, work, now=NOW, lease_ms=LEASE) == [
        ClusterNode(
            id="n1",
            address="http://n1",
            startedAt="2023-11-14T22:13:20.000Z",
            heartbeatAt="2027-01-15T08:00:00.000Z",
            alive=True,
            leaving=False,
            accounts=0,
            deliveries=0,
            outbox=0,
        ),
        ClusterNode(
            id="n2",
            address="http://n2",
            startedAt="2023-11-14T22:13:20.000Z",
            heartbeatAt="2027-01-15T07:59:00.000Z",
            alive=False,
            leaving=False,
            accounts=3,
            deliveries=1,
            outbox=2,
        ),
    ]
    assert cluster_nodes([], work, now=NOW, lease_ms=LEASE) == []
