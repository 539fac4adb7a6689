"""``/v1/cluster``: the nodes sharing this store, what each watches and works on.

Any node answers for all: the answer comes from the store (heartbeats, leases, claimed
queue rows), not from asking the other nodes. A node is ``alive`` while its heartbeat is
younger than ``imap.lease`` and it is not leaving; a node that stopped cleanly removed its
row, one that died stays listed (not alive) for a while.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from sqlalchemy.engine import RowMapping

from relay.api.endpoint import Endpoint, json_response
from relay.api.keys import METRICS, NODE, SETTINGS, STORE
from relay.api.models import Out
from relay.auth.grants import Permission
from relay.events.model import iso_ms
from relay.metrics import Metrics
from relay.store import nodes as nodes_store
from relay.store.engine import now_ms

TAG = "Service"


class ClusterNode(Out):
    id: str
    address: str
    startedAt: str
    heartbeatAt: str
    alive: bool
    leaving: bool
    accounts: int
    deliveries: int
    outbox: int


class Cluster(Out):
    engine: str
    node: str
    nodes: list[ClusterNode]


def cluster_nodes(
    rows: Sequence[RowMapping], work: Mapping[str, Mapping[str, int]], *, now: int, lease_ms: int
) -> list[ClusterNode]:
    """The nodes as the API shows them (pure)."""
    out: list[ClusterNode] = []
    for row in rows:
        node = str(row["id"])
        counts = work.get(node, {})
        out.append(
            ClusterNode(
                id=node,
                address=str(row["address"]),
                startedAt=iso_ms(int(row["started_ms"])),
                heartbeatAt=iso_ms(int(row["heartbeat_ms"])),
                alive=int(row["heartbeat_ms"]) >= now - lease_ms and not row["leaving"],
                leaving=bool(row["leaving"]),
                accounts=counts.get("accounts", 0),
                deliveries=counts.get("deliveries", 0),
                outbox=counts.get("outbox", 0),
            )
        )
    return out


def record(metrics: Metrics, nodes: Sequence[ClusterNode]) -> None:
    """Set the cluster gauges from ``nodes`` (labels of nodes gone are dropped)."""
    metrics.cluster_nodes.clear()
    metrics.cluster_work.clear()
    alive = sum(1 for n in nodes if n.alive)
    metrics.cluster_nodes.labels(alive="true").set(alive)
    metrics.cluster_nodes.labels(alive="false").set(len(nodes) - alive)
    for n in nodes:
        for kind, value in (
            ("accounts", n.accounts),
            ("deliveries", n.deliveries),
            ("outbox", n.outbox),
        ):
            metrics.cluster_work.labels(node=n.id, kind=kind).set(value)


async def read_nodes(app: web.Application) -> list[ClusterNode]:
    """The registered nodes and their work, read from the store now."""
    now = now_ms()
    async with app[STORE].read() as conn:
        rows = await nodes_store.rows(conn)
        work = await nodes_store.work(conn, now_ms=now)
    lease_ms = int(app[SETTINGS].imap.lease * 1000)
    return cluster_nodes(rows, work, now=now, lease_ms=lease_ms)


async def read_cluster(request: web.Request) -> web.Response:
    nodes = await read_nodes(request.app)
    record(request.app[METRICS], nodes)
    body: dict[str, Any] = {
        "engine": request.app[STORE].dialect,
        "node": request.app[NODE],
        "nodes": nodes,
    }
    return json_response(Cluster(**body))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/cluster",
        read_cluster,
        "The nodes sharing this store: liveness, accounts watched, queue work",
        TAG,
        response=Cluster,
        permission=Permission("settings", "read"),
    ),
]
