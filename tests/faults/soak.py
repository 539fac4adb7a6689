"""A soak run: many mailboxes, mail flowing, faults at random; nothing may be lost or doubled.

Used by ``bench/soak.py`` (30 minutes, 500 mailboxes) and ``tests/faults/test_soak.py`` (a
minute, 50 mailboxes). One run:

1. starts a PostgreSQL of its own (:class:`PrivatePostgres`; ``store="sqlite"``: a SQLite file,
   and no database faults), a :class:`ScaleDovecot` with one user per mailbox, a verifying
   webhook receiver in this process, and one ``relay serve`` process with a route for
   ``messageNew`` and ``accountInitialized`` to the receiver;
2. adds every mailbox as an account through the API and waits for every account's
   ``accountInitialized``; the relay's RSS is read then (``rss_start_kib``);
3. for ``minutes``, APPENDs ``rate`` messages a second to random mailboxes, each with a
   subject and Message-ID of its own (from connections of the mailbox's user, opened when
   first needed and opened again after a fault; an APPEND that fails is tried again with the
   same message until it succeeds or the flow has ended 30 s ago);
4. meanwhile, one at a time after random pauses (``fault_gap``), takes turns through the
   fault kinds in a shuffled order: ``kick`` (``doveadm kick`` of ``kick_users`` random
   users: the relay's connections and the sender's are cut), ``dovecot_restart`` (stop,
   ``dovecot_down`` seconds, start on the same ports and mail) and ``postgres_crash``
   (``pg_ctl -m immediate stop``, ``postgres_down`` seconds, start). No fault starts in the
   flow's last ``quiet_tail`` seconds, and one that runs at the end is finished first;
5. after the flow, reads what really is in the mailboxes (the maildir files: an APPEND whose
   connection broke may or may not have stored its message, and one tried again may be
   there twice), then waits until every message there was reported as ``messageNew``, for at
   most ``drain`` seconds, and a few seconds more for late repeats; the RSS is read again.

Counted per subject: ``sent`` (in a mailbox at the end), ``received`` (reported at least
once), ``lost`` (sent, never reported), ``duplicated`` (reported under more distinct
``webhook-id`` values than it has copies in its mailbox: the relay made two events for one
message), ``redelivered`` (extra deliveries of a ``webhook-id`` already accepted: allowed,
delivery is at least once), ``unknown`` (reported, never sent) and ``wrong_account``
(reported for another account than the mailbox it was sent to). The latency is APPEND ->
first accepted webhook, over the messages whose APPEND started outside every fault: not from
2 s before one started until ``settle`` seconds after it ended.

Every process started is stopped by its PID (also on errors and cancellation) and the
temporary directory removed; ``logs`` keeps the relay's, Dovecot's and PostgreSQL's logs and
the figures per subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
import math
import random
import shutil
import signal
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from relay.imap import ClientOptions, ImapClient, ImapError
from tests.peers.dovecot_scale import ScaleDovecot
from tests.peers.postgres import PrivatePostgres
from tests.peers.receiver import Receiver
from tests.proc import RelayProcess, free_port, relay_env

__all__ = ["Soak", "SoakOptions", "run_soak"]

TOKEN = "soak-" + "s" * 40
SECRET = "soak-secret-for-credentials"
SERVICE_SECRET = "soak-service-secret"
PASSWORD = "secret"
KINDS = ("kick", "dovecot_restart", "postgres_crash")
# Accounts added through the API at once.
ADD_CONCURRENCY = 16
# An APPEND is tried again this long after the flow ended, then given up.
SEND_GRACE = 30.0
# Seconds after the drain for late repeats to show.
REPEAT_WAIT = 5.0
# Appends from this long before a fault count as inside it (their events may be held up).
BEFORE_FAULT = 2.0
SENDER_OPTIONS = ClientOptions(connect_timeout=20.0, command_timeout=30.0, done_timeout=10.0)
# Seconds between samples of the relay's RSS during the flow.
RSS_EVERY = 60.0
# Subjects listed in the result (the logs keep all of them).
LISTED = 20


@dataclass(frozen=True)
class SoakOptions:
    """What one run does; see the module docstring."""

    minutes: float = 30.0
    mailboxes: int = 500
    rate: float = 5.0
    seed: int = 1
    store: str = "postgresql"
    # Seconds between the end of one fault and the start of the next (uniform).
    fault_gap: tuple[float, float] = (20.0, 60.0)
    # Users kicked at once; 0: a twentieth of the mailboxes (at least 1).
    kick_users: int = 0
    dovecot_down: tuple[float, float] = (2.0, 5.0)
    postgres_down: tuple[float, float] = (5.0, 20.0)
    quiet_tail: float = 15.0
    settle: float = 10.0
    drain: float = 180.0
    # Seconds to wait for every account's accountInitialized.
    setup: float = 600.0
    logs: Path | None = None
    log_level: str = "info"
    # The fault kinds to take turns through; None: all (no database faults on SQLite).
    only: tuple[str, ...] | None = None

    def kinds(self) -> tuple[str, ...]:
        """The fault kinds of this run."""
        kinds = KINDS if self.store == "postgresql" else KINDS[:2]
        return tuple(k for k in kinds if self.only is None or k in self.only)

    def kicked(self) -> int:
        return self.kick_users or max(1, self.mailboxes // 20)


def user(n: int) -> str:
    return f"soak{n}@example.com"


def account_id(n: int) -> str:
    return f"soak{n}"


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class Sent:
    """One message of the flow."""

    subject: str
    mailbox: int
    # When the APPEND that succeeded started (epoch s); None: never confirmed.
    appended_at: float | None = None
    failures: int = 0


@dataclass
class Fault:
    kind: str
    started: float
    ended: float = 0.0
    detail: str = ""
    # The relay's RSS right after the fault (KiB).
    rss_kib: int = 0


class Sender:
    """APPENDs from connections of each mailbox's user, opened when first needed; a broken
    one is dropped and opened again on the next APPEND."""

    def __init__(self, server: ScaleDovecot) -> None:
        self.server = server
        self.clients: dict[int, ImapClient] = {}
        self.locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.failures = 0
        self.last_error = ""

    async def _client(self, n: int) -> ImapClient:
        client = self.clients.get(n)
        if client is not None and not client.closed:
            return client
        client = await ImapClient.connect(
            self.server.host, self.server.port, options=SENDER_OPTIONS
        )
        try:
            await client.login(user(n), PASSWORD)
        except BaseException:
            client.close()
            raise
        self.clients[n] = client
        return client

    async def send(self, message: Sent, body: bytes, until: float) -> None:
        """APPEND ``body`` to the mailbox until it succeeds or ``until`` (epoch s) passed."""
        pause = 0.2
        while True:
            async with self.locks[message.mailbox]:
                started = time.time()
                try:
                    client = await self._client(message.mailbox)
                    started = time.time()
                    await client.append("INBOX", body)
                except (ImapError, OSError, TimeoutError) as exc:
                    self.failures += 1
                    message.failures += 1
                    self.last_error = f"{exc.__class__.__name__}: {exc}"
                    broken = self.clients.pop(message.mailbox, None)
                    if broken is not None:
                        broken.close()
                else:
                    message.appended_at = started
                    return
            if time.time() > until:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


def message_bytes(subject: str, n: int, seed: int, serial: int) -> bytes:
    return (
        f"From: Soak <soak@example.org>\r\nTo: {user(n)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <soak-{seed}-{serial}@example.org>\r\n\r\nsoak message {serial}\r\n"
    ).encode()


def mailbox_subjects(server: ScaleDovecot, mailboxes: int) -> dict[str, tuple[int, int]]:
    """What the mailboxes hold: subject -> (mailbox, copies), read from the maildir files."""
    for _ in range(10):
        # Dovecot moves files from new/ to cur/ while a session looks: read again then.
        with contextlib.suppress(FileNotFoundError):
            return _read_maildirs(server, mailboxes)
    return _read_maildirs(server, mailboxes)


def _read_maildirs(server: ScaleDovecot, mailboxes: int) -> dict[str, tuple[int, int]]:
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    found: dict[str, tuple[int, int]] = {}
    for n in range(mailboxes):
        maildir = server.root / "mail" / "example.com" / f"soak{n}" / "Maildir"
        for sub in ("cur", "new"):
            folder = maildir / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                with path.open("rb") as fh:
                    subject = str(parser.parse(fh).get("Subject", ""))
                if subject.startswith("soak "):
                    _, copies = found.get(subject, (n, 0))
                    found[subject] = (n, copies + 1)
    return found


class Tally:
    """The receiver's ``messageNew`` and ``accountInitialized`` deliveries, read as they come."""

    def __init__(self, rx: Receiver) -> None:
        self.rx = rx
        self.initialized: set[str] = set()
        # subject -> webhook-id -> accepted deliveries of it
        self.ids: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.first_at: dict[str, float] = {}
        self.accounts: defaultdict[str, set[str]] = defaultdict(set)
        self._next = 0

    def update(self) -> None:
        requests = self.rx.requests
        for delivery in requests[self._next :]:
            if not delivery.accepted or delivery.id is None:
                continue
            body = delivery.json()
            if body.get("event") == "accountInitialized":
                self.initialized.add(str(body.get("account")))
            elif body.get("event") == "messageNew":
                subject = str((body.get("data") or {}).get("subject") or "")
                if not subject.startswith("soak "):
                    continue
                self.ids[subject][delivery.id] += 1
                self.first_at.setdefault(subject, delivery.received_at)
                self.accounts[subject].add(str(body.get("account")))
        self._next = len(requests)

    async def wait(self, done: Callable[[], bool], limit: float) -> bool:
        """Wait until ``done()`` (checked after each delivery) or ``limit`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while True:
                    self.update()
                    if done():
                        return True
                    await self.rx.wait_for(self.rx.accepted_count + 1, timeout=None)
        self.update()
        return done()


class Soak:
    """The peers of one run and the run itself; :meth:`close` stops every process by its PID."""

    def __init__(self, options: SoakOptions, progress: Callable[[str], None]) -> None:
        self.options = options
        self.progress = progress
        self.root = Path(tempfile.mkdtemp(prefix="relay-soak-"))
        # Dovecot's login and mail processes and the database server run as other users.
        self.root.chmod(0o755)
        self.server = ScaleDovecot(
            root=self.root / "dovecot",
            tuned=True,
            process_limit=3 * options.mailboxes + 200,
            uid_base=310_000,
        )
        for n in range(options.mailboxes):
            self.server.add_user(user(n), PASSWORD)
        self.pg: PrivatePostgres | None = None
        if options.store == "postgresql":
            self.pg = PrivatePostgres(self.root / "pg")
        elif options.store != "sqlite":
            raise ValueError(f"store must be postgresql or sqlite, not {options.store!r}")
        self.workdir = self.root / "relay"
        self.relay: RelayProcess | None = None
        self.faults: list[Fault] = []
        self.rss_samples: list[list[int]] = []
        self.sent: dict[str, Sent] = {}
        self.rng_mail = random.Random(f"{options.seed}-mail")
        self.rng_faults = random.Random(f"{options.seed}-faults")

    # -- peers ---------------------------------------------------------------------------------

    def start_peers(self) -> None:
        """Start PostgreSQL (when used) and Dovecot (blocking)."""
        if self.pg is not None:
            self.pg.init()
        self.server.start(timeout=120)

    def store_url(self) -> str:
        if self.pg is not None:
            return self.pg.url
        return f"sqlite:///{self.workdir / 'relay.db'}"

    def close(self) -> None:
        """Stop whatever runs (relay, Dovecot, PostgreSQL), keep the logs asked for, and
        remove the temporary directory. Safe to call more than once."""
        if self.relay is not None and self.relay.proc is not None:
            with contextlib.suppress(Exception):
                self.relay.stop(signal.SIGTERM, 30.0)
        with contextlib.suppress(Exception):
            self.server.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        if self.options.logs is not None and self.root.exists():
            self._keep_logs(self.options.logs)
        shutil.rmtree(self.root, ignore_errors=True)

    def _keep_logs(self, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        if self.relay is not None and self.relay.log_path.exists():
            shutil.copy(self.relay.log_path, logs / "relay.log")
        for name in ("dovecot.log", "stderr.log"):
            path = self.server.root / "log" / name
            if path.exists():
                shutil.copy(path, logs / f"dovecot-{name}")
        if self.pg is not None and (self.pg.root / "log").exists():
            shutil.copy(self.pg.root / "log", logs / "postgresql.log")

    # -- the relay -------------------------------------------------------------------------

    async def start_relay(self, http: aiohttp.ClientSession, rx: Receiver) -> None:
        port = free_port()
        env = relay_env(
            self.workdir,
            port,
            {
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": SECRET,
                "RELAY_STORE_URL": self.store_url(),
                "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
                "RELAY_LOG_LEVEL": self.options.log_level,
            },
        )
        self.relay = RelayProcess(self.workdir, port, env)
        await asyncio.to_thread(self.relay.start)
        url = self.relay.url
        await _api(http, "POST", f"{url}/v1/settings", {"serviceSecret": SERVICE_SECRET})
        route = await _api(
            http,
            "POST",
            f"{url}/v1/webhooks",
            {"url": rx.url, "events": ["messageNew", "accountInitialized"]},
        )
        rx.secret = route["secret"]

    async def add_accounts(self, http: aiohttp.ClientSession) -> None:
        assert self.relay is not None
        url = self.relay.url
        pending = iter(range(self.options.mailboxes))

        async def worker() -> None:
            for n in pending:
                body = {
                    "account": account_id(n),
                    "name": account_id(n),
                    "email": user(n),
                    "imap": {
                        "host": self.server.host,
                        "port": self.server.port,
                        "secure": False,
                        "auth": {"user": user(n), "pass": PASSWORD},
                    },
                }
                await _api(http, "POST", f"{url}/v1/account", body)

        await asyncio.gather(*(worker() for _ in range(ADD_CONCURRENCY)))

    def relay_rss(self) -> int:
        assert self.relay is not None
        assert self.relay.proc is not None
        if self.relay.proc.poll() is not None:
            raise RuntimeError(f"the relay exited:\n{self.relay.output()[-3000:]}")
        return rss_kib(self.relay.proc.pid)

    # -- mail ------------------------------------------------------------------------------

    async def flow(self, sender: Sender, ends: float) -> None:
        """APPEND ``rate`` messages a second to random mailboxes until ``ends`` (epoch s)."""
        options = self.options
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        begin = loop.time()
        serial = 0
        try:
            while time.time() < ends:
                delay = begin + serial / options.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                n = self.rng_mail.randrange(options.mailboxes)
                subject = f"soak {serial} to {account_id(n)}"
                message = Sent(subject, n)
                self.sent[subject] = message
                body = message_bytes(subject, n, options.seed, serial)
                task = asyncio.create_task(sender.send(message, body, ends + SEND_GRACE))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                serial += 1
            if tasks:
                await asyncio.wait(set(tasks), timeout=SEND_GRACE + 60)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- faults ----------------------------------------------------------------------------

    async def fault_loop(self, clock: float, stop_at: float, stop: asyncio.Event) -> None:
        """Faults one at a time until ``stop_at`` (epoch s) or ``stop``; the fault running
        then is finished (its peer brought back) first."""
        options = self.options
        rng = self.rng_faults
        bag: list[str] = []
        while options.kinds():
            gap = rng.uniform(*options.fault_gap)
            if time.time() + gap >= stop_at:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), gap)
            if stop.is_set():
                return
            if not bag:
                bag = list(options.kinds())
                rng.shuffle(bag)
            fault = Fault(bag.pop(), time.time())
            try:
                await self._fault(fault)
            finally:
                fault.ended = time.time()
                self.faults.append(fault)
            fault.rss_kib = await asyncio.to_thread(self.relay_rss)
            self.progress(
                f"{fault.started - clock:7.1f} s  {fault.kind} {fault.detail}"
                f" ({fault.ended - fault.started:.1f} s)"
            )

    async def _fault(self, fault: Fault) -> None:
        options = self.options
        rng = self.rng_faults
        if fault.kind == "kick":
            users = rng.sample(range(options.mailboxes), min(options.kicked(), options.mailboxes))
            fault.detail = ",".join(account_id(n) for n in sorted(users))
            for n in users:
                try:
                    await self.server.kick(user(n))
                except RuntimeError as exc:  # doveadm failed: noted, the run goes on
                    fault.detail += f" ({account_id(n)}: {str(exc).strip()[:200]})"
        elif fault.kind == "dovecot_restart":
            down = rng.uniform(*options.dovecot_down)
            fault.detail = f"down {down:.1f} s"
            await asyncio.to_thread(self.server.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.server.start, 120)
        elif fault.kind == "postgres_crash":
            assert self.pg is not None
            down = rng.uniform(*options.postgres_down)
            fault.detail = f"down {down:.1f} s"
            await asyncio.to_thread(self.pg.crash)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.pg.start)
        else:
            raise ValueError(fault.kind)

    async def sample_rss(self, clock: float) -> None:
        """The relay's RSS every ``RSS_EVERY`` seconds of the flow: [s, KiB]."""
        while True:
            await asyncio.sleep(RSS_EVERY)
            kib = await asyncio.to_thread(self.relay_rss)
            self.rss_samples.append([round(time.time() - clock), kib])

    def outside_faults(self, at: float) -> bool:
        settle = self.options.settle
        return all(not (f.started - BEFORE_FAULT <= at <= f.ended + settle) for f in self.faults)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        options = self.options
        began = time.monotonic()
        self.progress(f"starting peers: {options.mailboxes} mailboxes, store {options.store}")
        await asyncio.to_thread(self.start_peers)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        timeout = aiohttp.ClientTimeout(total=120)
        sender = Sender(self.server)
        async with (
            aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
            Receiver(secret="whsec_" + "S" * 44, service_secret=SERVICE_SECRET) as rx,
        ):
            try:
                return await self._run(http, rx, sender, began)
            finally:
                sender.close()
                if self.relay is not None and self.relay.proc is not None:
                    await asyncio.to_thread(self.relay.stop, signal.SIGTERM, 30.0)

    async def _run(
        self, http: aiohttp.ClientSession, rx: Receiver, sender: Sender, began: float
    ) -> dict[str, Any]:
        options = self.options
        tally = Tally(rx)
        await self.start_relay(http, rx)
        assert self.relay is not None
        assert self.relay.proc is not None
        self.progress(f"relay pid {self.relay.proc.pid}; adding accounts")
        await self.add_accounts(http)
        ready = await tally.wait(lambda: len(tally.initialized) >= options.mailboxes, options.setup)
        if not ready:
            raise RuntimeError(
                f"{options.mailboxes - len(tally.initialized)} accounts not initialized "
                f"within {options.setup} s"
            )
        # The first listing is the baseline: let the listeners reach IDLE.
        await asyncio.sleep(2.0)
        rss_start = await asyncio.to_thread(self.relay_rss)
        setup_s = time.monotonic() - began
        clock = time.time()
        ends = clock + options.minutes * 60
        self.progress(f"accounts initialized after {setup_s:.1f} s; mail and faults now")
        stop = asyncio.Event()
        faults = asyncio.create_task(self.fault_loop(clock, ends - options.quiet_tail, stop))
        sampler = asyncio.create_task(self.sample_rss(clock))
        try:
            await self.flow(sender, ends)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            # Not cancelled: a fault still running brings its peer back before anything else.
            stop.set()
            await faults
        flowed = time.time() - clock
        self.progress("flow ended; reading the mailboxes")
        sent_copies = await asyncio.to_thread(mailbox_subjects, self.server, options.mailboxes)
        drain_from = time.time()
        drained = await tally.wait(
            lambda: all(s in tally.first_at for s in sent_copies), options.drain
        )
        drain_s = time.time() - drain_from
        self.progress(f"drained: {drained} after {drain_s:.1f} s; waiting for late repeats")
        await asyncio.sleep(REPEAT_WAIT)
        tally.update()
        rss_end = await asyncio.to_thread(self.relay_rss)
        result = self.figures(tally, sent_copies, rx)
        result.update(
            {
                "drained": drained,
                "rss_start_kib": rss_start,
                "rss_end_kib": rss_end,
                "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2),
                "flow_s": round(flowed, 1),
                "drain_s": round(drain_s, 1),
                "setup_s": round(setup_s, 1),
                "append_failures": sender.failures,
                "last_append_error": sender.last_error or None,
                "fault_log": [
                    [
                        f.kind,
                        round(f.started - clock, 1),
                        round(f.ended - f.started, 1),
                        f.detail,
                        f.rss_kib,
                    ]
                    for f in self.faults
                ],
                "rss_samples": self.rss_samples,
                "options": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()
                },
            }
        )
        if options.logs is not None:
            await asyncio.to_thread(self._write_subjects, options.logs, tally, sent_copies)
        return result

    def figures(
        self, tally: Tally, sent_copies: dict[str, tuple[int, int]], rx: Receiver
    ) -> dict[str, Any]:
        received = set(tally.ids)
        lost = sorted(set(sent_copies) - received, key=_serial)
        duplicated = sorted(
            (s for s, ids in tally.ids.items() if len(ids) > sent_copies.get(s, (0, 1))[1]),
            key=_serial,
        )
        wrong_account = sorted(
            (
                s
                for s, accounts in tally.accounts.items()
                if s in sent_copies and accounts != {account_id(sent_copies[s][0])}
            ),
            key=_serial,
        )
        unknown = sorted(received - set(sent_copies), key=_serial)
        redelivered = sum(n - 1 for ids in tally.ids.values() for n in ids.values())
        latencies = [
            (tally.first_at[s] - m.appended_at) * 1000
            for s, m in self.sent.items()
            if m.appended_at is not None
            and s in tally.first_at
            and self.outside_faults(m.appended_at)
        ]
        return {
            "sent": len(sent_copies),
            "appended": sum(1 for m in self.sent.values() if m.appended_at is not None),
            "never_appended": sum(1 for m in self.sent.values() if m.appended_at is None),
            "extra_copies": sum(c - 1 for _, c in sent_copies.values()),
            "received": len(received & set(sent_copies)),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "redelivered": redelivered,
            "unknown": len(unknown),
            "wrong_account": len(wrong_account),
            "lost_subjects": lost[:LISTED],
            "duplicated_subjects": duplicated[:LISTED],
            "faults": dict(Counter(f.kind for f in self.faults)),
            "latency_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
            "latency_p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
            "latency_count": len(latencies),
            "webhooks_accepted": rx.accepted_count,
        }

    def _write_subjects(
        self, logs: Path, tally: Tally, sent_copies: dict[str, tuple[int, int]]
    ) -> None:
        """One JSON line per message: when it was sent, its copies, its webhook ids."""
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / "subjects.jsonl").open("w") as out:
            for subject in sorted(set(self.sent) | set(sent_copies), key=_serial):
                message = self.sent.get(subject)
                line = {
                    "subject": subject,
                    "appended_at": message.appended_at if message else None,
                    "append_failures": message.failures if message else None,
                    "copies": sent_copies.get(subject, (None, 0))[1],
                    "first_webhook_at": tally.first_at.get(subject),
                    "webhook_ids": dict(tally.ids.get(subject, {})),
                }
                out.write(json.dumps(line) + "\n")


def _serial(subject: str) -> int:
    try:
        return int(subject.split()[1])
    except (IndexError, ValueError):
        return -1


async def _api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        payload = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        return payload


def _quiet(text: str) -> None:
    del text


async def run_soak(
    options: SoakOptions, progress: Callable[[str], None] = _quiet
) -> dict[str, Any]:
    """Run one soak (see the module) and return its figures; every peer is stopped after."""
    soak = Soak(options, progress)
    try:
        return await soak.run()
    finally:
        await asyncio.to_thread(soak.close)
