"""Scale out with IMAP: three relay nodes on one PostgreSQL share 300 Dovecot mailboxes.

Mail arrives all along (a background pusher, ~15 messages a second to random mailboxes);
whatever happens to the nodes, at the end every message appended is reported exactly once:
under one ``webhook-id`` (a retried delivery repeats its id), with a verified signature, and
stored as one ``messageNew``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env

from .conftest import (
    LEASE,
    MAILBOXES,
    PASSWORD,
    SECRET,
    TOKEN,
    WAIT,
    Cluster,
    account_id,
    add_route,
    assert_exactly_once,
    mailbox_user,
)
from .support import ClusterDovecot, Pusher, imap_append, imap_connections

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

USERS = [mailbox_user(n) for n in range(MAILBOXES)]
ACCOUNTS = [account_id(u) for u in USERS]
NODES = ["node-1", "node-2", "node-3"]
# Messages a second from the background pusher, across all mailboxes.
RATE = 15.0
# How long a paused node stays paused (longer than its lease).
PAUSE = 2 * LEASE
# What GET /v1/cluster shows of each node.
NODE_FIELDS = {
    "id",
    "address",
    "startedAt",
    "heartbeatAt",
    "alive",
    "leaving",
    "accounts",
    "deliveries",
    "outbox",
}


# -- set-up ---------------------------------------------------------------------------------


async def add_accounts(cluster: Cluster, dovecot: ClusterDovecot, via: str) -> None:
    """POST /v1/account for every mailbox (plain IMAP), 20 at a time, through node ``via``."""
    limit = asyncio.Semaphore(20)

    async def add(user: str) -> None:
        payload = {
            "account": account_id(user),
            "name": account_id(user),
            "email": user,
            "imap": {
                "host": dovecot.host,
                "port": dovecot.port,
                "secure": False,
                "auth": {"user": user, "pass": PASSWORD},
            },
        }
        async with limit:
            await cluster.api("POST", "/v1/account", payload, via=via)

    await asyncio.gather(*(add(u) for u in USERS))


async def wait_initialized(cluster: Cluster) -> None:
    """Wait until every account took its first baseline (mail from then on is new mail)."""

    missing: list[str] = []

    async def check() -> bool:
        rows = await cluster.events("accountInitialized")
        done = {r["account"] for r in rows}
        missing[:] = [a for a in ACCOUNTS if a not in done]
        return not missing

    try:
        await cluster.wait_for(check, f"accountInitialized of {len(ACCOUNTS)} accounts", WAIT * 2)
    except AssertionError as exc:
        page = await cluster.api("GET", "/v1/accounts?pageSize=500")
        states = {a["account"]: a["state"] for a in page["accounts"]}
        holders = (await cluster.spread()).holders
        sample = {a: (states.get(a), holders.get(a)) for a in missing[:10]}
        raise AssertionError(
            f"{exc}: {len(missing)} not initialized, e.g. (state, lease holder): {sample}"
        ) from None


async def started_cluster(
    cluster: Cluster, dovecot: ClusterDovecot, rx: Receiver, tag: str
) -> Pusher:
    """Three nodes, a route to ``rx``, the 300 accounts spread and initialized, and a
    pusher (not started yet)."""
    # node-1 first: a fresh store (see test_nodes_started_together_on_a_fresh_store_come_up).
    await cluster.start(NODES[0])
    await cluster.start(*NODES[1:])
    await add_route(cluster, rx)
    await add_accounts(cluster, dovecot, via="node-1")
    await wait_initialized(cluster)
    await cluster.wait_spread(ACCOUNTS, NODES)
    return Pusher(imap_append(dovecot.host, dovecot.port, PASSWORD), USERS, tag=tag, rate=RATE)


async def wait_all_connected(cluster: Cluster) -> None:
    """Wait until every account's state is ``connected`` (a node writing for accounts it
    lost, such as ``disconnected`` when it stops their listeners, shows up here)."""
    seen: dict[str, int] = {}

    async def check() -> bool:
        page = await cluster.api("GET", "/v1/accounts?pageSize=500")
        states = Counter(str(a["state"]) for a in page["accounts"])
        seen.clear()
        seen.update(states)
        return states["connected"] == len(ACCOUNTS)

    try:
        await cluster.wait_for(check, f"all {len(ACCOUNTS)} accounts connected")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; account states: {seen}") from None


async def held_by(cluster: Cluster, node_id: str) -> dict[str, int]:
    """The accounts ``node_id`` holds an unexpired lease on, with their epochs."""
    spread = await cluster.spread()
    return {a: spread.epochs[a] for a, n in spread.holders.items() if n == node_id}


async def wait_listeners_match_leases(
    cluster: Cluster, dovecot: ClusterDovecot, nodes: list[str]
) -> None:
    """Wait until each node has as many IMAP connections as it holds accounts: listeners
    of accounts it lost are gone (one connection per account: INBOX's IDLE)."""
    seen: dict[str, tuple[int, int]] = {}

    async def check() -> bool:
        counts = (await cluster.spread()).counts()
        for node_id in nodes:
            pid = cluster.nodes[node_id].pid
            seen[node_id] = (
                await asyncio.to_thread(imap_connections, pid, dovecot.port),
                counts[node_id],
            )
        return all(conns == held for conns, held in seen.values())

    try:
        await cluster.wait_for(check, "IMAP connections == leases held, on every node")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (connections, leases) per node: {seen}") from None


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.timeout(600)
async def test_accounts_spread_when_nodes_join_and_move_when_one_is_killed(
    cluster: Cluster, cluster_dovecot: ClusterDovecot, receiver: Receiver
) -> None:
    """One node watches all 300 accounts; two more join and each gets its rendezvous share
    (largest share at most 1.2 x the mean) while mail arrives; after kill -9 of one node
    the survivors take its accounts once its leases run out; every message appended,
    also to the dead node's mailboxes after the kill, is reported exactly once."""
    dovecot = cluster_dovecot
    await cluster.start("node-1")
    await add_route(cluster, receiver)
    await add_accounts(cluster, dovecot, via="node-1")
    await wait_initialized(cluster)
    await cluster.wait_spread(ACCOUNTS, ["node-1"])
    pusher = Pusher(
        imap_append(dovecot.host, dovecot.port, PASSWORD), USERS, tag="join-kill", rate=RATE
    )
    pusher.start()
    try:
        await cluster.start("node-2", "node-3")
        spread = await cluster.wait_spread(ACCOUNTS, NODES)
        shares = spread.counts()
        assert max(shares.values()) <= 1.2 * len(ACCOUNTS) / len(NODES), shares
        for node_id in NODES:
            view = spread.views[node_id]
            assert view["engine"] == "postgresql"
            assert sum(n["accounts"] for n in view["nodes"]) == len(ACCOUNTS)
            for entry in view["nodes"]:
                assert entry.keys() >= NODE_FIELDS, entry
                assert isinstance(entry["deliveries"], int), entry
                assert isinstance(entry["outbox"], int), entry

        victim = "node-1"
        lost = sorted(a for a, n in spread.holders.items() if n == victim)
        await cluster.kill(victim)
        # Mail for its accounts while nobody watches them, and after they were taken.
        await pusher.push_to([f"{a}@example.com" for a in lost[:15]])
        survivors = ["node-2", "node-3"]
        after = await cluster.wait_spread(ACCOUNTS, survivors)
        assert all(after.epochs[a] > spread.epochs[a] for a in lost), "taken without new epoch"
        await pusher.push_to([f"{a}@example.com" for a in lost[15:45]])
        await assert_exactly_once(cluster, receiver, pusher)
    finally:
        await pusher.close()


@pytest.mark.timeout(600)
async def test_node_paused_past_its_lease_writes_nothing_for_the_accounts_it_lost(
    cluster: Cluster, cluster_dovecot: ClusterDovecot, receiver: Receiver
) -> None:
    """A node is SIGSTOPped for twice its lease while mail keeps arriving, also in its
    mailboxes; the others take its accounts. After SIGCONT it stops the listeners of the
    accounts it lost (its connections match the leases it holds) and writes nothing for
    them: no message is reported or stored twice, none is lost."""
    dovecot = cluster_dovecot
    pusher = await started_cluster(cluster, dovecot, receiver, "pause")
    pusher.start()
    try:
        victim = "node-2"
        before = await held_by(cluster, victim)
        assert before, f"{victim} holds no account"
        paused_at = time.monotonic()
        cluster.pause(victim)
        others = ["node-1", "node-3"]
        taken = await cluster.wait_spread(ACCOUNTS, others)
        # Its IDLE sockets get the EXISTS of these; the new owners must be the ones to report.
        await pusher.push_to([f"{a}@example.com" for a in sorted(before)[:30]])
        await asyncio.sleep(max(0.0, PAUSE - (time.monotonic() - paused_at)))
        cluster.resume(victim)
        # More mail for them while it wakes up with listeners it no longer owns.
        await pusher.push_to([f"{a}@example.com" for a in sorted(before)[30:60]])
        assert all(taken.epochs[a] > e for a, e in before.items()), "taken without new epoch"

        back = await cluster.wait_spread(ACCOUNTS, NODES)
        assert back.views[victim]["node"] == victim
        await wait_listeners_match_leases(cluster, dovecot, NODES)
        await wait_all_connected(cluster)
        await assert_exactly_once(cluster, receiver, pusher)
    finally:
        await pusher.close()


@pytest.mark.timeout(600)
async def test_rolling_restart_hands_accounts_over_and_back(
    cluster: Cluster, cluster_dovecot: ClusterDovecot, receiver: Receiver
) -> None:
    """Each node in turn gets SIGTERM (it exits 0 holding no lease: handed over at once),
    the other two take its accounts, it starts again and the accounts spread back; mail
    arriving all along is reported exactly once."""
    dovecot = cluster_dovecot
    pusher = await started_cluster(cluster, dovecot, receiver, "rolling")
    pusher.start()
    try:
        for node_id in NODES:
            code = await cluster.stop(node_id)
            assert code == 0, f"{node_id} exited {code} on SIGTERM"
            leases = await cluster.leases()
            kept = sorted(a for a, (n, _, _) in leases.items() if n == node_id)
            assert not kept, f"{node_id} exited still holding {len(kept)} leases: {kept[:10]}"
            others = [n for n in NODES if n != node_id]
            await cluster.wait_spread(ACCOUNTS, others)
            await cluster.start(node_id)
            await cluster.wait_spread(ACCOUNTS, NODES)
        await wait_listeners_match_leases(cluster, dovecot, NODES)
        await assert_exactly_once(cluster, receiver, pusher)
    finally:
        await pusher.close()


@pytest.mark.timeout(600)
async def test_nodes_started_together_on_a_fresh_store_come_up(cluster: Cluster) -> None:
    """Three nodes started at the same moment on an empty database (same API token) all
    come up, and each lists the three alive."""
    await cluster.start(*NODES)

    async def all_listed() -> bool:
        for node_id in NODES:
            view = await cluster.view(node_id)
            if not isinstance(view, dict):
                return False
            if sorted(n["id"] for n in view["nodes"] if n["alive"]) != NODES:
                return False
        return True

    await cluster.wait_for(all_listed, "every node listing the three alive")


async def test_second_relay_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    """A second ``relay serve`` on the SQLite file a running relay uses exits non-zero and
    says SQLite is for a single node; the first one keeps serving."""
    database = tmp_path / "shared" / "relay.db"
    database.parent.mkdir()
    relays: list[RelayProcess] = []
    for name in ("first", "second"):
        port = free_port()
        extra = {
            "RELAY_STORE_URL": f"sqlite:///{database}",
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": SECRET,
            "RELAY_LOG_LEVEL": "info",
        }
        relays.append(RelayProcess(tmp_path / name, port, relay_env(tmp_path / name, port, extra)))
    first, second = relays
    try:
        await asyncio.to_thread(first.start)
        await asyncio.to_thread(second.start, wait=False)
        assert second.proc is not None
        # Returns once it serves; raises once it exited (what should happen).
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(second.wait_ready, 30.0)
        try:
            code: int | None = await asyncio.to_thread(second.proc.wait, 5)
        except subprocess.TimeoutExpired:
            code = None
        assert code is not None, (
            "a second relay on the same SQLite file started and serves:\n" + _tail(second.output())
        )
        assert code != 0, f"the second relay exited 0:\n{_tail(second.output())}"
        said = second.output()
        assert "SQLite" in said, _tail(said)
        assert "single" in said, _tail(said)
        # The first one was not disturbed.
        await asyncio.to_thread(first.wait_ready, 5.0)
        assert first.proc is not None
        assert first.proc.poll() is None
    finally:
        for relay in relays:
            if relay.proc is not None:
                await asyncio.to_thread(relay.stop, signal.SIGTERM, 10.0)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
