"""The cluster harness: several ``relay serve`` processes on one fresh PostgreSQL database.

``cluster`` is a :class:`Cluster` whose nodes (``node-1``, ``node-2`` ...) are started,
stopped, killed, paused and resumed by PID; whatever the test does, every node is stopped at
the end (resumed first if paused, SIGKILL if SIGTERM does not end it) and the database is
dropped. When a test fails, the tail of every node's log is added to its report. Cluster
tests take turns on the machine (``cluster_slot``), also under pytest-xdist.

``cluster_dovecot`` is one Dovecot with :data:`MAILBOXES` users (``box0@example.com`` ...),
shared by the tests of a module; each test adds the accounts to its own database, so the
mail a test leaves behind is only ever the baseline of the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.sources.assignment import assign
from tests.auth.conftest import _no_ca_bundle_override, http, sandbox, signer
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env

from .support import (
    ClusterDovecot,
    Pusher,
    create_database,
    drop_database,
    query,
    wait_reported,
)

__all__ = [
    "_no_ca_bundle_override",
    "http",
    "sandbox",
    "signer",
]

TOKEN = "cluster-token-" + "c" * 32
SECRET = "cluster-secret-for-credentials"
PASSWORD = "pw-cluster"
MAILBOXES = 300
# Seconds: the contract's test values (imap.lease: a node silent this long is dead).
SCAN_INTERVAL = 1
LEASE = 4
# Generous waits for anything that should happen "soon" on a loaded 2-core machine.
WAIT = 60.0


def mailbox_user(n: int) -> str:
    """The n-th Dovecot user."""
    return f"box{n}@example.com"


def account_id(user: str) -> str:
    """The relay account watching ``user`` (its local part)."""
    return user.split("@", 1)[0]


@dataclass
class Node:
    """One ``relay serve`` process of the cluster, by id."""

    id: str
    relay: RelayProcess
    paused: bool = False
    starts: int = 0

    @property
    def url(self) -> str:
        return self.relay.url

    @property
    def running(self) -> bool:
        proc = self.relay.proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.relay.proc is not None, f"{self.id} was never started"
        return self.relay.proc.pid


@dataclass
class Spread:
    """Who holds which account, from ``account_leases`` and each node's ``GET /v1/cluster``."""

    holders: dict[str, str]  # account -> node whose unexpired lease it is
    epochs: dict[str, int]  # account -> lease epoch
    views: dict[str, Any]  # node id -> its /v1/cluster answer (or the error)

    def counts(self) -> Counter[str]:
        return Counter(self.holders.values())


@dataclass
class Cluster:
    """The relay nodes of one test, sharing ``store_url``."""

    root: Path
    store_url: str
    # Extra environment for every node started from now on (``RELAY_*``).
    env: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    _http: aiohttp.ClientSession | None = None

    # -- processes --------------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        """The node ``node_id`` (created, not started, on first use; same port ever after)."""
        if node_id not in self.nodes:
            workdir = self.root / node_id
            port = free_port()
            self.nodes[node_id] = Node(node_id, RelayProcess(workdir, port, {}))
        return self.nodes[node_id]

    def _env(self, node: Node) -> dict[str, str]:
        extra = {
            "RELAY_STORE_URL": self.store_url,
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": SECRET,
            "RELAY_CLUSTER_NODE_ID": node.id,
            "RELAY_SERVICE_URL": node.url,
            "RELAY_IMAP_SCAN_INTERVAL": str(SCAN_INTERVAL),
            "RELAY_IMAP_LEASE": str(LEASE),
            "RELAY_IMAP_RECONNECT_MIN": "0.2",
            "RELAY_IMAP_RECONNECT_MAX": "2",
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            # A delivery claimed by a node that died comes back after 3 s, not 60.
            "RELAY_WEBHOOKS_TIMEOUT": "2",
            "RELAY_WEBHOOKS_LEASE": "3",
            "RELAY_WEBHOOKS_POLL_INTERVAL": "0.2",
            # Three nodes (four during a restart), at most 2 x 3 pooled connections and the
            # wake-up connection each, leave most of PostgreSQL's 100 connections to the
            # tests running beside them.
            "RELAY_STORE_POOL_SIZE": "3",
            "RELAY_LOG_LEVEL": "info",
            **self.env,
        }
        return relay_env(node.relay.workdir, node.relay.port, extra)

    async def start(self, *node_ids: str) -> None:
        """Start these nodes (together) and wait until each answers /health."""

        def one(node: Node) -> None:
            node.relay.env = self._env(node)
            node.relay.start()

        nodes = [self.node(n) for n in node_ids]
        for node in nodes:
            assert not node.running, f"{node.id} is already running"
            node.starts += 1
            node.relay.workdir.mkdir(parents=True, exist_ok=True)
            with node.relay.log_path.open("ab") as log:
                log.write(f"--- test harness: start #{node.starts} of {node.id}\n".encode())
        await asyncio.gather(*(asyncio.to_thread(one, n) for n in nodes))

    async def stop(self, node_id: str) -> int:
        """SIGTERM and wait (SIGKILL after 20 s); the exit status."""
        node = self.nodes[node_id]
        if node.paused:
            self.resume(node_id)
        return await asyncio.to_thread(node.relay.stop, signal.SIGTERM, 20.0)

    async def kill(self, node_id: str) -> None:
        """kill -9."""
        node = self.nodes[node_id]
        await asyncio.to_thread(node.relay.kill)
        node.paused = False

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing."""
        node = self.nodes[node_id]
        assert node.running, f"{node_id} is not running"
        os.kill(node.pid, signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT."""
        node = self.nodes[node_id]
        if node.paused and node.running:
            os.kill(node.pid, signal.SIGCONT)
        node.paused = False

    async def close(self) -> None:
        """Stop every node (teardown): resume the paused, SIGTERM, SIGKILL after 10 s."""

        def finish(node: Node) -> None:
            proc = node.relay.proc
            if proc is None or proc.poll() is not None:
                return
            if node.paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                node.paused = False
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        await asyncio.gather(
            *(asyncio.to_thread(finish, n) for n in self.nodes.values()), return_exceptions=True
        )
        if self._http is not None:
            await self._http.close()
            self._http = None

    def live(self) -> list[str]:
        """The nodes running and not paused, by id."""
        return sorted(n.id for n in self.nodes.values() if n.running and not n.paused)

    # -- API --------------------------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._http

    async def api(self, method: str, path: str, body: Any = None, *, via: str | None = None) -> Any:
        """Call the API of node ``via`` (the first live one by default); fail on non-2xx."""
        node = self.nodes[via or self.live()[0]]
        async with self.http.request(method, node.url + path, json=body) as resp:
            text = await resp.text()
            assert resp.status < 300, f"{method} {path} via {node.id}: {resp.status} {text}"
            return await resp.json() if text else None

    async def view(self, node_id: str) -> Any:
        """``GET /v1/cluster`` of one node: the JSON, or a string saying what went wrong."""
        node = self.nodes[node_id]
        try:
            async with self.http.get(
                node.url + "/v1/cluster", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    return f"HTTP {resp.status}: {text[:300]}"
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{exc.__class__.__name__}: {exc}"

    # -- store ------------------------------------------------------------------------------

    async def leases(self) -> dict[str, tuple[str, int, int]]:
        """``account_leases``: account -> (node, expires_ms, epoch)."""
        rows = await query(
            self.store_url, "SELECT account, node, expires_ms, epoch FROM account_leases"
        )
        return {r["account"]: (r["node"], r["expires_ms"], r["epoch"]) for r in rows}

    async def spread(self, observers: Iterable[str] = ()) -> Spread:
        """Who holds what now (unexpired leases), and what ``observers`` answer."""
        leases = await self.leases()
        now = int(time.time() * 1000)
        holders = {a: n for a, (n, until, _) in leases.items() if n and until > now}
        epochs = {a: e for a, (_, _, e) in leases.items()}
        views = {o: await self.view(o) for o in observers}
        return Spread(holders, epochs, views)

    async def events(self, kind: str) -> list[Any]:
        """The stored events of one type, oldest first: (id, account, payload) rows."""
        return await query(
            self.store_url,
            "SELECT id, account, payload FROM events WHERE event = $1 ORDER BY seq",
            kind,
        )

    # -- waiting ----------------------------------------------------------------------------

    async def wait_spread(
        self,
        accounts: list[str],
        nodes: list[str] | None = None,
        *,
        within: float = WAIT,
    ) -> Spread:
        """Wait until the accounts are spread over ``nodes`` (the live ones by default) as
        the contract says: each held (unexpired lease) by the node ``assign`` names, and
        every node's ``GET /v1/cluster`` lists exactly those nodes alive with those counts.
        Fails with what was seen last."""
        nodes = sorted(nodes if nodes is not None else self.live())
        expected = assign(accounts, nodes)
        want = Counter(expected.values())
        last: Spread | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            last = await self.spread(nodes)
            if self._spread_ok(last, expected, want, nodes):
                return last
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        raise AssertionError(
            f"accounts not spread over {nodes} within {within:.0f} s:\n"
            + self._describe(last, expected, want, accounts)
        )

    @staticmethod
    def _spread_ok(
        seen: Spread, expected: dict[str, str], want: Counter[str], nodes: list[str]
    ) -> bool:
        if any(seen.holders.get(a) != n for a, n in expected.items()):
            return False
        for node_id, view in seen.views.items():
            if not isinstance(view, dict):
                return False
            alive = {n["id"]: n for n in view.get("nodes", []) if n.get("alive")}
            if view.get("node") != node_id or sorted(alive) != nodes:
                return False
            if any(alive[n].get("accounts") != want[n] for n in nodes):
                return False
        return True

    @staticmethod
    def _describe(
        seen: Spread | None, expected: dict[str, str], want: Counter[str], accounts: list[str]
    ) -> str:
        if seen is None:
            return "nothing seen"
        counts = seen.counts()
        mean = len(accounts) / max(1, len(want))
        unheld = [a for a in accounts if a not in seen.holders]
        elsewhere = [a for a in accounts if a in seen.holders and seen.holders[a] != expected[a]]
        lines = [
            f"  leases held per node: {dict(sorted(counts.items()))}; assign() wants "
            f"{dict(sorted(want.items()))}; largest share / mean = "
            f"{max(counts.values(), default=0) / mean:.2f}",
            f"  {len(unheld)} accounts without an unexpired lease, e.g. {unheld[:8]}",
            f"  {len(elsewhere)} held by another node than assign() names, e.g. "
            + str({a: (seen.holders[a], expected[a]) for a in elsewhere[:8]}),
        ]
        for node_id, view in seen.views.items():
            lines.append(f"  GET /v1/cluster on {node_id}: {_short(view)}")
        return "\n".join(lines)

    async def wait_for(
        self, check: Callable[[], Awaitable[Any]], what: str, within: float = WAIT
    ) -> Any:
        """Poll ``check`` until it returns something truthy; return that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            result = await check()
            if result:
                return result
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
            await asyncio.sleep(0.5)

    # -- reports ----------------------------------------------------------------------------

    def logs(self, lines: int = 40) -> str:
        """The last lines of every node's log (for failure reports)."""
        out = []
        for node in self.nodes.values():
            state = (
                "paused"
                if node.paused
                else "running"
                if node.running
                else f"exited {node.relay.proc.returncode}"
                if node.relay.proc is not None
                else "never started"
            )
            text = node.relay.output().splitlines()
            out.append(f"===== {node.id} ({state}, pid {node.relay.proc and node.relay.proc.pid})")
            problems = [
                line
                for line in text
                if '"level": "error"' in line
                or '"level": "critical"' in line
                or "Traceback" in line
            ]
            if problems:
                out.append(f"--- {len(problems)} error lines; the last ones:")
                out.extend(problems[-8:])
            out.append(f"--- last {lines} lines:")
            out.extend(text[-lines:])
        return "\n".join(out)


def _short(view: Any) -> str:
    if not isinstance(view, dict):
        return str(view)
    nodes = [
        {k: n.get(k) for k in ("id", "alive", "leaving", "accounts")} for n in view.get("nodes", [])
    ]
    return f"engine={view.get('engine')} node={view.get('node')} nodes={nodes}"


# -- the verdict -----------------------------------------------------------------------------


async def stored_duplicates(cluster: Cluster, tag: str) -> dict[str, list[tuple[str, str]]]:
    """Subjects of this test stored as more than one messageNew: (account, event id) each."""
    by_subject: dict[str, list[tuple[str, str]]] = {}
    for row in await cluster.events("messageNew"):
        subject = str((json.loads(row["payload"]).get("data") or {}).get("subject") or "")
        if subject.startswith(tag + " "):
            by_subject.setdefault(subject, []).append((row["account"], row["id"]))
    return {s: found for s, found in by_subject.items() if len(found) > 1}


async def assert_exactly_once(cluster: Cluster, rx: Receiver, pusher: Pusher) -> None:
    """Stop the pusher; every message it appended arrives, each under exactly one
    webhook-id, and the store holds one messageNew for each."""
    await pusher.stop()
    assert pusher.sent, f"the pusher appended nothing: {pusher.errors[:3]}"
    found = await wait_reported(rx, pusher, within=WAIT * 1.5)
    # Anything reported twice would show up by now (retries take webhooks.lease, 3 s).
    await asyncio.sleep(4)
    found = await wait_reported(rx, pusher, within=0)
    doubles = await stored_duplicates(cluster, pusher.tag)
    problems = found.problems()
    if doubles:
        sample = dict(sorted(doubles.items())[:10])
        problems.append(f"{len(doubles)} messages stored as several messageNew, e.g. {sample}")
    if problems:
        owners = (await cluster.spread()).holders
        missing_owners = Counter(owners.get(account_id(u), "-") for u in found.missing.values())
        problems.append(
            f"pushed {len(pusher.sent)} (+{len(pusher.uncertain)} uncertain, errors "
            f"{pusher.errors[:3]}); reported {len(found.ids)}; current owners of the missing "
            f"messages' accounts: {dict(missing_owners)}; receiver {rx.stats()}"
        )
    if problems:
        pytest.fail("\n".join(problems))


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_dovecot() -> Iterator[ClusterDovecot]:
    """One Dovecot with :data:`MAILBOXES` users for the module (stopped by PID after)."""
    # Not tmp_path: Dovecot's unprivileged processes must be able to walk into the directory.
    root = Path(tempfile.mkdtemp(prefix="relay-cluster-dovecot-"))
    # Each mailbox: the owner's IDLE, a paused or dying node's, a pusher's; room to spare.
    server = ClusterDovecot(root=root, tuned=True, process_limit=4 * MAILBOXES + 200)
    for n in range(MAILBOXES):
        server.add_user(mailbox_user(n), PASSWORD)
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def cluster_db() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test (dropped afterwards, even if in use)."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


# Each cluster test runs three or four relays against hundreds of mailboxes. Under
# pytest-xdist they take turns (whatever the --dist mode; an xdist_group only helps with
# --dist loadgroup): a small machine is not overloaded into timeouts, and PostgreSQL's
# max_connections (100) is not exhausted by a dozen relay pools at once.
_SLOT = Path(tempfile.gettempdir()) / "relay-cluster-tests.lock"


@pytest.fixture
async def cluster_slot() -> AsyncIterator[None]:
    """Hold the machine's cluster-test slot (an exclusive flock) for the test."""
    fd = os.open(_SLOT, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture
async def cluster(cluster_slot: None, tmp_path: Path, cluster_db: str) -> AsyncIterator[Cluster]:
    """The test's relay nodes on ``cluster_db``; all stopped at the end, whatever happened."""
    nodes = Cluster(tmp_path / "nodes", cluster_db)
    try:
        yield nodes
    finally:
        await nodes.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver that verifies signatures (its secret is set by :func:`add_route`)."""
    rx = Receiver(secret="whsec_" + "C" * 44)
    await rx.start()
    try:
        yield rx
    finally:
        await rx.stop()


async def add_route(cluster: Cluster, rx: Receiver, events: list[str] | None = None) -> None:
    """A webhook route to ``rx`` for ``messageNew``; ``rx`` verifies with its secret."""
    route = await cluster.api(
        "POST", "/v1/webhooks", {"url": rx.url, "events": events or ["messageNew"]}
    )
    rx.secret = route["secret"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Add every node's log tail (and Dovecot's) to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    cluster = funcargs.get("cluster")
    if isinstance(cluster, Cluster):
        report.sections.append(("relay nodes (log tails)", cluster.logs()))
    dovecot = funcargs.get("cluster_dovecot")
    if isinstance(dovecot, ClusterDovecot):
        report.sections.append(("dovecot (warnings and errors)", _dovecot_problems(dovecot)))


def _dovecot_problems(dovecot: ClusterDovecot, lines: int = 20) -> str:
    """The last warnings and errors of Dovecot's log (logins and logouts are noise here)."""
    text = dovecot.log_tail(100_000)
    found = [
        line
        for line in text.splitlines()
        if any(word in line for word in ("Warning", "Error", "Fatal", "Panic"))
    ]
    return "\n".join(found[-lines:]) or "(none)"
