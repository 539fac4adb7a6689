"""Scale out: how accounts are split over the nodes, and how fast a dead node's accounts are
watched again.

    python bench/cluster.py [--small] [--per-node 1000] [--relay-nodes 3] [--scan-interval 2]
                            [--lease 10] [--plain] [--accounts 100000] [--nodes 10]
                            [--skip-run] [--logs DIR]

Two parts, both in every run (``--skip-run``: the first only).

**(a) The assignment function alone** (:func:`relay.sources.assignment.assign`, rendezvous
hashing), in this process: ``--accounts`` account ids over ``--nodes`` node ids.

- ``assign_s``: one call, every account's owner; ``assign_join_s`` the same with one node
  more. Every node makes this call for every account at each full scan
  (``imap.scan_interval``).
- ``assign_largest_share_over_mean`` (goal <= 1.05) and ``assign_smallest_share_over_mean``.
- ``assign_join_moved_share``: the share of accounts whose owner changes when node N+1
  joins, against the ideal 1/(N+1) (``assign_join_moved_vs_ideal``, goal within 10 %);
  ``assign_join_moved_elsewhere``: moved accounts that did not go to the new node (0).
- ``assign_leave_moved_share``: the same when one node leaves, against 1/N;
  ``assign_leave_moved_not_leaver``: moved accounts that were not the leaver's (0).
- Baseline, same accounts and nodes, same figures as ``modulo_*``: the plain
  ``hash(account) % N`` split (BLAKE2b of the account, as stable as the relay's), which
  balances as well but moves about N/(N+1) of all accounts on a join.

**(b) A real cluster**: one Dovecot (IMAP over TLS; plain TCP with ``--plain``) with
``--relay-nodes`` x ``--per-node`` users (``--small``: 100 per node) and as many ``relay serve``
processes (uvloop when installed) on one fresh PostgreSQL database, with
``imap.scan_interval`` = ``--scan-interval`` and ``imap.lease`` = ``--lease`` (defaults 2 s and
10 s: what a user might set for fast failover) and ``store.pool_size`` = ``--pool-size``
(default 5). Dovecot runs one ``imap`` process per connection and one system uid per
mailbox, as in ``bench/imap_scale.py``, whose helpers this reuses. Every webhook goes to a
verifying receiver in this process (route for ``messageNew`` only).

1. Baseline, on a database of its own: one node, ``--per-node`` accounts added through its
   API (``single_add_s``: first POST -> every account ``accountInitialized``;
   ``single_add_api_s``: until the last POST was answered). It is stopped (SIGTERM), one
   message is appended to each mailbox, and it is started again: ``single_restart_s`` is
   process start -> every one of those messages received as a signed ``messageNew``
   webhook (``single_ready_s``: until it answered ``/health``; ``single_connected_s``:
   until every account was ``connected``; ``single_event_made_last_s``: until the relay
   made the last of those events). This is the work a survivor does when it takes accounts
   over (connect, log in, catch up on what came meanwhile from the stored folder state,
   store, deliver), for as many mailboxes as the dead node had, without the wait for the
   lease: so ``failover_s - failover_lease_wait_s`` (``failover_takeover_s``) compares with
   it, and what failover costs beyond it is the detection. (A restart rather than a first
   add: a survivor takes over mailboxes whose folder state is stored, it does not take a
   first baseline.) The baseline database is dropped before the cluster starts.
2. The cluster: node-1 starts, then node-2... together; the accounts are added through
   node-1's API (``--concurrency`` at a time); ``add_s`` runs until every account is
   initialized and held, as ``assign`` names, by an unexpired lease (``add_api_s``: until
   the last POST was answered; ``spread``: leases per node).
3. Failover: one connection per mailbox of node-1's accounts logs in beforehand; node-1
   gets ``kill -9``; right after, one message is appended to each of those mailboxes.
   ``failover_s`` is kill -> every account node-1 held has an unexpired lease of a live node
   AND every one of those messages was received as a ``messageNew`` webhook (goal: lease +
   5 s). Also: ``failover_leases_s`` (the leases alone), ``failover_first_taken_s``,
   ``failover_reported_p50_s``, ``failover_event_made_p50_s`` / ``_last_s`` (kill -> the
   relay made the event, the envelope's ``date``: the IMAP side without the delivery),
   ``failover_lease_wait_s`` (kill -> the last of node-1's leases expired: how long the
   store made the survivors wait), ``failover_appends_s`` (the appends themselves),
   ``failover_missing`` (messages not reported within the wait) and
   ``failover_last_by_node_s`` (kill -> the last message of each new owner's share).
4. Join: node-N+1 (a new id) starts (``join_ready_s``: until it answers).
   ``join_balanced_s``: its start -> every account held by an unexpired lease of a live
   node and the largest share <= 1.2 x the mean; ``join_settled_s``: -> every account held
   by the node ``assign`` names (the wait ends there; ``join_largest_share_over_mean`` is
   the split then); ``join_max_unheld``: the most accounts seen without a live lease
   meanwhile (sampled every ~0.1 s), ``join_unheld_window_s`` from the first to the last
   sample that saw any; ``join_moved_share`` against 1/(live nodes). Then one message is
   appended to each account the new node holds and ``join_check_missing`` counts those not
   reported within 60 s (``join_check_p99_ms``: append -> webhook): the accounts moved are
   watched.

Leases and stored events are read from the database (``account_leases``, ``events``,
``accounts``) every ~0.1 s. ``--logs DIR`` keeps the relay logs (``RELAY_LOG_LEVEL``:
``--log-level``) and Dovecot's (logins and logouts, timestamped). Everything listens on
127.0.0.1; every process started is stopped by its PID and both databases are dropped,
also on errors. Timing goals are reported, never asserted; a wait that runs out reports
null and says so in ``errors``.

Prints one JSON line; ``loadavg`` is the machine's 1-minute load average before and after
the run (other work sharing the cores shows there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from bench.imap_scale import PASSWORD, api, percentile, user  # noqa: E402
from relay.imap import ClientOptions, ImapClient  # noqa: E402
from relay.sources.assignment import assign  # noqa: E402
from tests.peers.dovecot_scale import ScaleDovecot  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "k" * 40
SECRET = "bench-secret-for-credentials"
GOAL_LARGEST_SHARE = 1.05
GOAL_JOIN_MOVED = 0.10  # within 10 % of 1/(N+1)
GOAL_FAILOVER_MARGIN = 5.0  # seconds over the lease
GOAL_BALANCED = 1.2  # largest share / mean
# Seconds between reads of the store while waiting.
POLL = 0.1
# Connections logging in or appending at once.
IMAP_CONCURRENCY = 50
IMAP_OPTIONS = ClientOptions(connect_timeout=60.0, command_timeout=60.0, done_timeout=30.0)


def progress(text: str) -> None:
    """A line on stderr (stdout carries only the result)."""
    print(f"cluster: {text}", file=sys.stderr, flush=True)


def rounded(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None


# -- (a) the assignment function --------------------------------------------------------------


def stable_hash(account: str) -> int:
    """The baseline's hash: BLAKE2b, so it is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(account.encode(), digest_size=8).digest(), "big")


def modulo_assign(accounts: Sequence[str], nodes: Sequence[str]) -> dict[str, str]:
    """The baseline: ``hash(account) % N`` over the sorted node ids."""
    ordered = sorted(nodes)
    return {a: ordered[stable_hash(a) % len(ordered)] for a in accounts}


def timed(split: Callable[[], dict[str, str]]) -> tuple[dict[str, str], float]:
    started = time.perf_counter()
    out = split()
    return out, time.perf_counter() - started


def moved(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [a for a, node in before.items() if after[a] != node]


def shares(owners: dict[str, str], nodes: Sequence[str]) -> tuple[float, float]:
    """Largest and smallest share over the mean (nodes with no account count as 0)."""
    counts = Counter(owners.values())
    mean = len(owners) / len(nodes)
    return max(counts[n] for n in nodes) / mean, min(counts[n] for n in nodes) / mean


def assignment_figures(count: int, node_count: int) -> dict[str, Any]:
    accounts = [f"acct-{n:07d}" for n in range(count)]
    nodes = [f"node-{i}" for i in range(1, node_count + 1)]
    joined = [*nodes, f"node-{node_count + 1}"]
    leaver = nodes[len(nodes) // 2]
    left = [n for n in nodes if n != leaver]
    out: dict[str, Any] = {"assign_accounts": count, "assign_nodes": node_count}
    for name, split in (("assign", assign), ("modulo", modulo_assign)):
        base, base_s = timed(lambda split=split: split(accounts, nodes))  # type: ignore[misc]
        grown, grown_s = timed(lambda split=split: split(accounts, joined))  # type: ignore[misc]
        shrunk = split(accounts, left)
        largest, smallest = shares(base, nodes)
        join_moved = moved(base, grown)
        leave_moved = moved(base, shrunk)
        out.update(
            {
                f"{name}_s": round(base_s, 3),
                f"{name}_join_s": round(grown_s, 3),
                f"{name}_largest_share_over_mean": round(largest, 4),
                f"{name}_smallest_share_over_mean": round(smallest, 4),
                f"{name}_join_moved_share": round(len(join_moved) / count, 4),
                f"{name}_join_moved_elsewhere": sum(
                    1 for a in join_moved if grown[a] != joined[-1]
                ),
                f"{name}_leave_moved_share": round(len(leave_moved) / count, 4),
                f"{name}_leave_moved_not_leaver": sum(1 for a in leave_moved if base[a] != leaver),
            }
        )
    ideal_join = 1 / (node_count + 1)
    out["assign_join_ideal_share"] = round(ideal_join, 4)
    out["assign_leave_ideal_share"] = round(1 / node_count, 4)
    for name in ("assign", "modulo"):
        out[f"{name}_join_moved_vs_ideal"] = round(out[f"{name}_join_moved_share"] / ideal_join, 3)
    return out


# -- (b) peers --------------------------------------------------------------------------------


def message(message_id: str, subject: str) -> bytes:
    return (
        f"From: Bench <bench@example.org>\r\nTo: box@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n\r\nbody\r\n"
    ).encode()


async def gather_limited(
    items: Sequence[Any], one: Callable[[Any], Awaitable[None]], limit: int
) -> list[BaseException]:
    """Run ``one(item)`` for every item, ``limit`` at a time; the exceptions raised."""
    left = iter(items)
    errors: list[BaseException] = []

    async def worker() -> None:
        for item in left:
            try:
                await one(item)
            except Exception as exc:
                errors.append(exc)

    await asyncio.gather(*(worker() for _ in range(limit)))
    return errors


def mailbox_of(message_id: str) -> int:
    """The mailbox number in a Message-ID made by :meth:`Appender.append`."""
    return int(message_id.rsplit("-", 1)[1].split("@", 1)[0])


class Appender:
    """IMAP connections (plain port), one per mailbox, logged in beforehand, that each
    APPEND one message to INBOX on :meth:`append`."""

    def __init__(self, server: ScaleDovecot, mailboxes: Sequence[int]) -> None:
        self.server = server
        self.mailboxes = list(mailboxes)
        self.clients: dict[int, ImapClient] = {}
        self.errors: list[str] = []

    async def login(self) -> None:
        async def one(n: int) -> None:
            client = await ImapClient.connect(
                self.server.host, self.server.port, options=IMAP_OPTIONS
            )
            try:
                await client.login(user(n), PASSWORD)
            except BaseException:
                client.close()
                raise
            self.clients[n] = client

        failed = await gather_limited(self.mailboxes, one, IMAP_CONCURRENCY)
        self.errors += [repr(e) for e in failed]

    async def append(self, tag: str) -> dict[str, float]:
        """One message to each mailbox logged in; Message-ID -> when its APPEND was sent."""
        sent: dict[str, float] = {}

        async def one(n: int) -> None:
            message_id = f"<{tag}-{n}@bench>"
            at = time.time()
            await self.clients[n].append("INBOX", message(message_id, f"{tag} {n}"))
            sent[message_id] = at

        failed = await gather_limited(sorted(self.clients), one, IMAP_CONCURRENCY)
        self.errors += [repr(e) for e in failed]
        return sent

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


class Arrivals:
    """``messageNew`` webhooks the receiver accepted: Message-ID -> first arrival (epoch s)."""

    def __init__(self, rx: Receiver) -> None:
        self.rx = rx
        self.at: dict[str, float] = {}
        # Message-ID -> when the relay made the event (its envelope's ``date``, epoch s).
        self.made: dict[str, float] = {}
        self._next = 0

    def update(self) -> None:
        requests = self.rx.requests
        for delivery in requests[self._next :]:
            if not delivery.accepted:
                continue
            body = delivery.json()
            if body.get("event") == "messageNew":
                message_id = (body.get("data") or {}).get("messageId")
                if isinstance(message_id, str) and message_id not in self.at:
                    self.at[message_id] = delivery.received_at
                    date = str(body.get("date", "")).replace("Z", "+00:00")
                    with contextlib.suppress(ValueError):
                        self.made[message_id] = datetime.fromisoformat(date).timestamp()
        self._next = len(requests)

    def missing(self, expected: dict[str, float]) -> int:
        self.update()
        return sum(1 for m in expected if m not in self.at)


# -- (b) the nodes ----------------------------------------------------------------------------


@dataclass
class Node:
    id: str
    relay: RelayProcess

    @property
    def running(self) -> bool:
        return self.relay.proc is not None and self.relay.proc.poll() is None


@dataclass
class Nodes:
    """The relay processes of one database; each is stopped by its PID at :meth:`close`."""

    workdir: Path
    store_url: str
    extra: dict[str, str]
    nodes: dict[str, Node] = field(default_factory=dict)

    def node(self, node_id: str) -> Node:
        if node_id not in self.nodes:
            workdir = self.workdir / node_id
            port = free_port()
            env = relay_env(
                workdir,
                port,
                {**self.extra, "RELAY_STORE_URL": self.store_url, "RELAY_CLUSTER_NODE_ID": node_id},
            )
            self.nodes[node_id] = Node(node_id, RelayProcess(workdir, port, env))
        return self.nodes[node_id]

    async def start(self, *node_ids: str, wait: bool = True) -> None:
        await asyncio.gather(
            *(asyncio.to_thread(self.node(n).relay.start, wait=wait) for n in node_ids)
        )

    async def stop(self, node_id: str) -> None:
        await asyncio.to_thread(self.nodes[node_id].relay.stop, signal.SIGTERM, 30.0)

    async def kill(self, node_id: str) -> None:
        await asyncio.to_thread(self.nodes[node_id].relay.kill)

    def live(self) -> list[str]:
        return sorted(n.id for n in self.nodes.values() if n.running)

    async def close(self, logs: Path | None) -> None:
        running = [n for n in self.nodes.values() if n.relay.proc is not None]
        await asyncio.gather(
            *(asyncio.to_thread(n.relay.stop, signal.SIGTERM, 30.0) for n in running),
            return_exceptions=True,
        )
        if logs is not None:
            await asyncio.to_thread(self._keep_logs, logs)

    def _keep_logs(self, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        tag = Path(self.store_url).name
        for n in self.nodes.values():
            if n.relay.log_path.exists():
                shutil.copy(n.relay.log_path, logs / f"{tag}-{n.id}.log")


def node_env(args: argparse.Namespace, ca_file: str | None) -> dict[str, str]:
    env = {
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_SECRET": SECRET,
        "RELAY_IMAP_SCAN_INTERVAL": str(args.scan_interval),
        "RELAY_IMAP_LEASE": str(args.lease),
        "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RELAY_STORE_POOL_SIZE": str(args.pool_size),
        "RELAY_SEND_DELIVER": "false",
        "RELAY_LOG_LEVEL": args.log_level,
    }
    if ca_file is not None:
        env["RELAY_IMAP_CA_BUNDLE"] = ca_file
    return env


async def add_accounts(
    http: aiohttp.ClientSession,
    url: str,
    server: ScaleDovecot,
    mailboxes: Sequence[int],
    *,
    tls: bool,
    concurrency: int,
) -> None:
    async def add(n: int) -> None:
        await api(
            http,
            "POST",
            f"{url}/v1/account",
            {
                "account": f"box{n}",
                "name": f"box{n}",
                "email": user(n),
                "imap": {
                    "host": server.host,
                    "port": server.tls_port if tls else server.port,
                    "secure": tls,
                    "auth": {"user": user(n), "pass": PASSWORD},
                },
            },
        )

    failed = await gather_limited(mailboxes, add, concurrency)
    if failed:
        raise RuntimeError(f"{len(failed)} accounts not added, e.g. {failed[0]!r}")


async def add_route(http: aiohttp.ClientSession, url: str, rx: Receiver) -> None:
    route = await api(http, "POST", f"{url}/v1/webhooks", {"url": rx.url, "events": ["messageNew"]})
    rx.secret = route["secret"]


# -- (b) reading the store --------------------------------------------------------------------


async def lease_rows(db: Any) -> dict[str, tuple[str, int]]:
    """``account_leases``: account -> (node, expires_ms)."""
    rows = await db.fetch("SELECT account, node, expires_ms FROM account_leases")
    return {str(r["account"]): (str(r["node"]), int(r["expires_ms"])) for r in rows}


def holders(leases: dict[str, tuple[str, int]], live: Sequence[str]) -> dict[str, str]:
    """Account -> the live node whose unexpired lease it is."""
    now = int(time.time() * 1000)
    return {a: n for a, (n, until) in leases.items() if n in live and until >= now}


async def initialized(db: Any) -> int:
    value = await db.fetchval(
        "SELECT count(DISTINCT account) FROM events WHERE event = 'accountInitialized'"
    )
    return int(value)


async def connected(db: Any) -> int:
    return int(await db.fetchval("SELECT count(*) FROM accounts WHERE state = 'connected'"))


async def poll_until(check: Callable[[], Awaitable[bool]], limit: float) -> float | None:
    """Seconds until ``check()`` is true (polled every ``POLL`` s); None past ``limit``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            return None
        await asyncio.sleep(POLL)


async def answering(relay: RelayProcess) -> float:
    """When (epoch s) a starting relay answered ``/health``."""
    await asyncio.to_thread(relay.wait_ready, 60.0)
    return time.time()


async def wait_reported(arrivals: Arrivals, expected: dict[str, float], limit: float) -> bool:
    async def check() -> bool:
        return arrivals.missing(expected) == 0

    return await poll_until(check, limit) is not None


# -- (b) the phases ---------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    server: ScaleDovecot
    workdir: Path
    ca_file: str | None
    http: aiohttp.ClientSession
    rx: Receiver
    arrivals: Arrivals
    errors: list[str] = field(default_factory=list)
    out: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def fail(self, what: str) -> None:
        progress(f"problem: {what}")
        self.errors.append(what)

    async def database(self, name: str) -> str:
        await pg_database(self.args.pg, name)
        return f"{self.args.pg.rsplit('/', 1)[0]}/{name}"

    async def single(self) -> None:
        """The baseline: one node, --per-node accounts; a restart with new mail waiting."""
        args = self.args
        name = f"relay_bench_cluster_{os.getpid()}_single"
        url = await self.database(name)
        nodes = Nodes(self.workdir / "single", url, node_env(args, self.ca_file))
        db = await asyncpg.connect(url)
        mailboxes = list(range(args.per_node))
        limit = 300 + args.per_node * 0.3
        try:
            await nodes.start("single-1")
            relay = nodes.nodes["single-1"].relay
            await add_route(self.http, relay.url, self.rx)
            progress(f"baseline: adding {len(mailboxes)} accounts to one node")
            started = time.monotonic()
            await add_accounts(
                self.http,
                relay.url,
                self.server,
                mailboxes,
                tls=self.tls,
                concurrency=args.concurrency,
            )
            self.out["single_add_api_s"] = round(time.monotonic() - started, 2)

            async def all_initialized() -> bool:
                return await initialized(db) >= len(mailboxes)

            waited = await poll_until(all_initialized, limit)
            if waited is None:
                self.fail("baseline: accounts not all initialized")
                return
            self.out["single_add_s"] = round(time.monotonic() - started, 2)
            await nodes.stop("single-1")
            appender = Appender(self.server, mailboxes)
            try:
                await appender.login()
                sent = await appender.append("single")
            finally:
                appender.close()
            self.out["single_append_errors"] = len(appender.errors)
            progress(f"baseline: restarting with {len(sent)} new messages waiting")
            boot_epoch = time.time()
            await nodes.start("single-1", wait=False)
            ready = asyncio.create_task(answering(relay))

            async def all_connected() -> bool:
                return await connected(db) >= len(mailboxes)

            connect_s = await poll_until(all_connected, limit)
            ok = await wait_reported(self.arrivals, sent, limit)
            self.out["single_ready_s"] = round(await ready - boot_epoch, 2)
            self.out["single_connected_s"] = rounded(connect_s)
            made = [self.arrivals.made[m] - boot_epoch for m in sent if m in self.arrivals.made]
            self.out["single_event_made_last_s"] = rounded(max(made) if made else None)
            if ok:
                last = max(self.arrivals.at[m] for m in sent)
                self.out["single_restart_s"] = round(last - boot_epoch, 2)
            else:
                self.fail(f"baseline: {self.arrivals.missing(sent)} messages not reported")
                self.out["single_restart_s"] = None
        finally:
            await nodes.close(args.logs)
            await db.close()
            await pg_database(args.pg, name, drop=True)

    async def cluster(self) -> None:
        args = self.args
        name = f"relay_bench_cluster_{os.getpid()}"
        url = await self.database(name)
        nodes = Nodes(self.workdir / "cluster", url, node_env(args, self.ca_file))
        db = await asyncpg.connect(url)
        ids = [f"node-{i}" for i in range(1, args.relay_nodes + 1)]
        mailboxes = list(range(args.relay_nodes * args.per_node))
        accounts = [f"box{n}" for n in mailboxes]
        limit = 300 + len(mailboxes) * 0.2
        try:
            # The first node alone migrates the fresh store, then the others join.
            await nodes.start(ids[0])
            await nodes.start(*ids[1:])
            first = nodes.nodes[ids[0]].relay
            await add_route(self.http, first.url, self.rx)
            progress(f"cluster: adding {len(accounts)} accounts through {ids[0]}")
            started = time.monotonic()
            await add_accounts(
                self.http,
                first.url,
                self.server,
                mailboxes,
                tls=self.tls,
                concurrency=args.concurrency,
            )
            self.out["add_api_s"] = round(time.monotonic() - started, 2)
            expected = assign(accounts, ids)

            async def spread() -> bool:
                held = holders(await lease_rows(db), ids)
                if any(held.get(a) != n for a, n in expected.items()):
                    return False
                return await initialized(db) >= len(accounts)

            if await poll_until(spread, limit) is None:
                self.fail("cluster: accounts never spread as assign() names")
                return
            self.out["add_s"] = round(time.monotonic() - started, 2)
            self.out["spread"] = dict(sorted(Counter(expected.values()).items()))
            await self.failover(nodes, db, accounts, ids)
            if "failover_leases_s" in self.out and self.out["failover_leases_s"] is not None:
                await self.join(nodes, db, accounts)
        finally:
            await nodes.close(args.logs)
            await db.close()
            await pg_database(args.pg, name, drop=True)

    async def failover(self, nodes: Nodes, db: Any, accounts: list[str], ids: list[str]) -> None:
        args = self.args
        victim = ids[0]
        survivors = ids[1:]
        leases = await lease_rows(db)
        lost = sorted(a for a, n in holders(leases, ids).items() if n == victim)
        self.out["failover_accounts"] = len(lost)
        appender = Appender(self.server, [int(a.removeprefix("box")) for a in lost])
        try:
            await appender.login()
            progress(f"failover: {len(appender.clients)} connections ready; kill -9 {victim}")
            # The victim's leases as of just before the kill: when they run out.
            leases = await lease_rows(db)
            until = max(leases[a][1] for a in lost) / 1000
            killed = time.time()
            await nodes.kill(victim)
            appends = asyncio.create_task(appender.append("failover"))
            first_taken: float | None = None
            all_taken: float | None = None
            while True:
                held = holders(await lease_rows(db), survivors)
                now = time.time()
                taken = sum(1 for a in lost if a in held)
                if taken and first_taken is None:
                    first_taken = now
                if taken == len(lost) and all_taken is None:
                    all_taken = now
                if (
                    appends.done()
                    and all_taken is not None
                    and self.arrivals.missing(appends.result()) == 0
                ):
                    break
                if now - killed > args.lease + 180:
                    break
                await asyncio.sleep(POLL)
            sent = await appends
        finally:
            appender.close()
        appended_at = max(sent.values(), default=killed)
        missing = self.arrivals.missing(sent)
        reported = [self.arrivals.at[m] - killed for m in sent if m in self.arrivals.at]
        made = [self.arrivals.made[m] - killed for m in sent if m in self.arrivals.made]
        done = (
            max(all_taken, killed + max(reported)) - killed
            if all_taken is not None and reported and not missing
            else None
        )
        self.out.update(
            {
                "failover_s": rounded(done),
                "failover_goal_s": args.lease + GOAL_FAILOVER_MARGIN,
                "failover_leases_s": rounded(all_taken - killed if all_taken else None),
                "failover_first_taken_s": rounded(first_taken - killed if first_taken else None),
                "failover_lease_wait_s": round(until - killed, 2),
                "failover_takeover_s": rounded(done - (until - killed) if done else None),
                "failover_reported_p50_s": rounded(percentile(reported, 50) if reported else None),
                "failover_event_made_p50_s": rounded(percentile(made, 50) if made else None),
                "failover_event_made_last_s": rounded(max(made) if made else None),
                "failover_appends_s": round(appended_at - killed, 2),
                "failover_missing": missing,
                "failover_append_errors": len(appender.errors),
            }
        )
        if missing:
            self.fail(f"failover: {missing} of {len(sent)} messages never reported")
        owners = holders(await lease_rows(db), survivors)
        self.out["spread_after_failover"] = dict(sorted(Counter(owners.values()).items()))
        # When each new owner had reported the last of its share (a slow one shows here).
        last: dict[str, float] = {}
        for message_id in sent:
            at = self.arrivals.at.get(message_id)
            owner = owners.get(f"box{mailbox_of(message_id)}")
            if at is not None and owner is not None:
                last[owner] = max(last.get(owner, 0.0), at - killed)
        self.out["failover_last_by_node_s"] = {n: round(t, 2) for n, t in sorted(last.items())}

    async def join(self, nodes: Nodes, db: Any, accounts: list[str]) -> None:
        args = self.args
        newcomer = f"node-{args.relay_nodes + 1}"
        live = sorted([*nodes.live(), newcomer])
        expected = assign(accounts, live)
        mean = len(accounts) / len(live)
        progress(f"join: starting {newcomer}")
        started = time.time()
        await nodes.start(newcomer, wait=False)
        ready = asyncio.create_task(answering(nodes.nodes[newcomer].relay))
        balanced: float | None = None
        settled: float | None = None
        max_unheld = 0
        unheld_from = unheld_until = 0.0
        while True:
            held = holders(await lease_rows(db), live)
            now = time.time()
            unheld = sum(1 for a in accounts if a not in held)
            max_unheld = max(max_unheld, unheld)
            if unheld:
                unheld_from = unheld_from or now
                unheld_until = now
            counts = Counter(held.values())
            if (
                balanced is None
                and not unheld
                and max(counts[n] for n in live) <= GOAL_BALANCED * mean
            ):
                balanced = now
            if settled is None and all(held.get(a) == n for a, n in expected.items()):
                settled = now
            # Once settled nothing moves any more: a split that is not balanced by then (few
            # accounts) never will be.
            if settled or now - started > args.lease + 180:
                break
            await asyncio.sleep(POLL)
        self.out["join_ready_s"] = round(await ready - started, 2)
        mine = sorted(a for a, n in expected.items() if n == newcomer)
        self.out.update(
            {
                "join_balanced_s": rounded(balanced - started if balanced else None),
                "join_settled_s": rounded(settled - started if settled else None),
                "join_max_unheld": max_unheld,
                "join_unheld_window_s": round(unheld_until - unheld_from, 2),
                "join_largest_share_over_mean": round(
                    max(Counter(held.values())[n] for n in live) / mean, 3
                ),
                "join_moved": len(mine),
                "join_moved_share": round(len(mine) / len(accounts), 4),
                "join_ideal_share": round(1 / len(live), 4),
                "spread_after_join": dict(sorted(Counter(held.values()).items())),
            }
        )
        if settled is None:
            self.fail("join: accounts never settled as assign() names")
            return
        # The accounts moved are watched: new mail in each is reported.
        appender = Appender(self.server, [int(a.removeprefix("box")) for a in mine])
        try:
            await appender.login()
            sent = await appender.append("join")
        finally:
            appender.close()
        await wait_reported(self.arrivals, sent, 60.0)
        spans = [
            (self.arrivals.at[m] - at) * 1000 for m, at in sent.items() if m in self.arrivals.at
        ]
        self.out["join_check_missing"] = self.arrivals.missing(sent)
        self.out["join_check_p99_ms"] = rounded(percentile(spans, 99) if spans else None, 1)


async def real_run(args: argparse.Namespace, server: ScaleDovecot, workdir: Path) -> dict[str, Any]:
    ca_file: str | None = None
    if not args.plain:
        ca_file = str(workdir / "dovecot-ca.pem")
        ca = server._ca
        assert ca is not None
        ca.cert_pem.write_to_path(ca_file)  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
        Receiver(secret="whsec_" + "K" * 44, keep=True) as rx,
    ):
        run = Run(args, server, workdir, ca_file, http, rx, Arrivals(rx))
        try:
            if not args.skip_baseline:
                await run.single()
            await run.cluster()
        except Exception as exc:
            run.fail(f"{exc.__class__.__name__}: {exc}")
    out = {
        "relay_nodes": args.relay_nodes,
        "per_node": args.per_node,
        "mailboxes": args.relay_nodes * args.per_node,
        "imap": "plain" if args.plain else "tls",
        "scan_interval_s": args.scan_interval,
        "lease_s": args.lease,
        **run.out,
        "errors": run.errors,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000, help="(a): accounts")
    parser.add_argument("--nodes", type=int, default=10, help="(a): nodes")
    parser.add_argument("--relay-nodes", type=int, default=3, help="(b): relay processes")
    parser.add_argument("--per-node", type=int, default=1000, help="(b): mailboxes per node")
    parser.add_argument("--small", action="store_true", help="(b) with 100 mailboxes per node")
    parser.add_argument("--scan-interval", type=float, default=2.0, help="imap.scan_interval")
    parser.add_argument("--lease", type=float, default=10.0, help="imap.lease")
    parser.add_argument("--plain", action="store_true", help="IMAP without TLS")
    parser.add_argument("--concurrency", type=int, default=16, help="POST /v1/account at once")
    # 5 (the relay's default is 10): four nodes with pool_size + as many overflow connections
    # each, and the wake-up connections, stay under a shared PostgreSQL's max_connections=100.
    parser.add_argument("--pool-size", type=int, default=5, help="store.pool_size per node")
    parser.add_argument("--skip-run", action="store_true", help="(a) only")
    parser.add_argument("--skip-baseline", action="store_true", help="(b) without the baseline")
    parser.add_argument("--log-level", default="warning", help="the relays' log.level")
    parser.add_argument("--logs", type=Path, help="copy the relay logs here")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.small:
        args.per_node = 100
    load_before = os.getloadavg()[0]
    progress(f"(a) assign(): {args.accounts} accounts over {args.nodes} nodes")
    result: dict[str, Any] = assignment_figures(args.accounts, args.nodes)
    goals: dict[str, Any] = {
        "assign_largest_share": result["assign_largest_share_over_mean"] <= GOAL_LARGEST_SHARE,
        "assign_join_moved_within_10pct": (
            abs(result["assign_join_moved_vs_ideal"] - 1) <= GOAL_JOIN_MOVED
        ),
    }
    if not args.skip_run:
        # One socket per mailbox in the relays, Dovecot and the appenders (children inherit).
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # SIGTERM unwinds like an error, so that the relays and Dovecot are stopped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        mailboxes = args.relay_nodes * args.per_node
        root = Path(tempfile.mkdtemp(prefix="relay-dovecot-"))
        # Each mailbox: the owner's IDLE, a dead or handing-over node's, an appender's.
        server = ScaleDovecot(
            root=root, tls=not args.plain, tuned=True, process_limit=2 * mailboxes + 500
        )
        for n in range(mailboxes):
            server.add_user(user(n), PASSWORD)
        try:
            progress(f"(b) starting Dovecot with {mailboxes} users")
            server.start(timeout=120)
            with tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir:
                run = asyncio.run(real_run(args, server, Path(workdir)))
        finally:
            server.stop()
            if args.logs is not None and server.log_path.exists():
                args.logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(server.log_path, args.logs / "dovecot.log")
            shutil.rmtree(root, ignore_errors=True)
        result.update(run)
        failover = run.get("failover_s")
        goals["failover_within_lease_plus_5s"] = (
            failover is not None and failover <= args.lease + GOAL_FAILOVER_MARGIN
        )
        goals["join_balanced"] = run.get("join_balanced_s") is not None
    # The machine's 1-minute load average before and after: other work on the cores.
    result["loadavg"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    result["goals"] = goals
    print(json.dumps(result))


if __name__ == "__main__":
    main()
