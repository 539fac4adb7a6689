"""Many mailboxes, one relay: memory per watched mailbox, time to connect all, and push
latency under load next to a bare IDLE client pool watching the same mailboxes.

    python bench/imap_scale.py [--mailboxes 2000] [--pushes 3000] [--rate 300] [--skip-restart]

Flags:

``--mailboxes N``
    Dovecot users, each watched by the relay (an account) and by the bare pool (default 2000).
``--pushes N``
    messages APPENDed while both watch (default 3000: 10 s at the default rate). They go to
    the mailboxes in turn, in a shuffled order, so one mailbox gets one every N/rate s.
``--rate R``
    APPENDs per second across all mailboxes (default 300).
``--skip-restart``
    skip the relay restart and the memory figures (``connect_s``, ``rss_mib`` and
    ``kib_per_mailbox`` print null): a shorter run when only the latency matters.

Starts a Dovecot (TLS) with one user per mailbox and a ``relay serve`` process (uvloop when
installed, SQLite store) that trusts the Dovecot CA. Dovecot runs one ``imap`` process per
connection, each mailbox with its own system uid: two IDLEs on one mailbox inside one
``imap`` process are not both told of new mail, and the kernel's inotify instances are
counted per uid (128 by default), past which Dovecot polls every 30 s instead. Then:

1. measures the relay's RSS with no accounts (the baseline);
2. adds ``--mailboxes`` password accounts through the API (TLS on the imaps port) and waits
   until all are ``connected`` (``add_s``);
3. unless ``--skip-restart``: restarts the relay and times from process start until every
   account is ``connected`` again (``connect_s``: boot with a full accounts table), then
   measures RSS once settled: ``kib_per_mailbox`` is (RSS - baseline) / mailboxes, so it
   counts the TLS connection, the listener and its folder state, everything per mailbox;
4. starts the bare pool in a child process (uvloop when installed): one TLS connection per
   mailbox that IDLEs on INBOX and, on ``* N EXISTS``, sends DONE, ``UID FETCH`` of the new
   messages with the items the relay fetches for new mail, and IDLEs again;
5. with the relay and the bare pool both watching, APPENDs ``--pushes`` messages, ``--rate``
   per second, from connections logged in beforehand, and measures APPEND -> signed
   ``messageNew`` webhook accepted by an in-process verifying receiver (relay) and APPEND ->
   FETCH answered (bare pool). Both see the same Dovecot load and its ~500 ms notification
   delay, so the difference is what the relay adds.

Progress goes to stderr (``relay pid N`` once the accounts are connected, ``pushing`` when
the APPENDs start: the moments to attach a profiler).

Prints one JSON line: ``relay_p50_ms`` / ``relay_p99_ms`` (APPEND -> webhook),
``bare_p50_ms`` / ``bare_p99_ms`` (APPEND -> fetched), ``overhead_p99_ms`` (relay p99 - bare
p99) against ``goal_overhead_p99_ms``, ``rate_per_s`` (the APPEND rate achieved), the
memory and connect figures, and the relay's latency split at the moment it made the event
(the envelope's ``date``, just before storing it): ``append_to_event_p50_ms`` /
``append_to_event_p99_ms`` (Dovecot, the IMAP path; compare with the bare pool) and
``event_to_webhook_p50_ms`` / ``event_to_webhook_p99_ms`` (store, delivery). A push not
seen within 60 s counts as infinitely late (``relay_missing``, ``bare_missing``; a p99 it
reaches prints null).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))

from relay.events.normalize import imap_items  # noqa: E402
from relay.imap import ClientOptions, Exists, ImapClient, Update  # noqa: E402
from tests.peers.dovecot import DovecotServer  # noqa: E402
from tests.peers.dovecot_scale import ScaleDovecot  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "s" * 40
PASSWORD = "secret"
SERVICE_SECRET = "bench-service-secret"
CONCURRENCY = 20
GOAL_OVERHEAD_P99_MS = 100
# Seconds a push may take to show up before it counts as missing.
SEEN_TIMEOUT = 60.0


def user(n: int) -> str:
    return f"box{n}@example.com"


def rss_kib(pid: int) -> int:
    """VmRSS of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def progress(text: str) -> None:
    """A line on stderr (stdout carries only the result): where the run is, for profiling."""
    print(f"imap_scale: {text}", file=sys.stderr, flush=True)


def ms(value: float) -> float | None:
    """Rounded milliseconds; None for a push never seen."""
    return round(value, 1) if math.isfinite(value) else None


# -- Dovecot: one imap process per connection, one uid per mailbox ----------------------------


@contextlib.contextmanager
def scale_dovecot(mailboxes: int) -> Iterator[ScaleDovecot]:
    """A :class:`ScaleDovecot` with ``mailboxes`` users, for the ``with`` block."""
    root = Path(tempfile.mkdtemp(prefix="relay-dovecot-"))
    # Each mailbox: the relay's connection, the bare pool's, the pusher's, with room to spare.
    server = ScaleDovecot(root=root, tls=True, tuned=True, process_limit=3 * mailboxes + 200)
    for n in range(mailboxes):
        server.add_user(user(n), PASSWORD)
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- the relay --------------------------------------------------------------------------------


async def api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        payload = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        return payload


async def connected(http: aiohttp.ClientSession, relay: RelayProcess) -> int:
    """How many accounts are connected (0 while the relay is not answering yet)."""
    try:
        page = await api(http, "GET", f"{relay.url}/v1/accounts?state=connected&pageSize=1")
    except (aiohttp.ClientError, RuntimeError):
        return 0
    return int(page["total"])


async def wait_connected(
    http: aiohttp.ClientSession, relay: RelayProcess, count: int, limit: float
) -> float:
    """Seconds until ``count`` accounts are connected."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while True:
            if await connected(http, relay) >= count:
                break
            await asyncio.sleep(0.1)
    return time.monotonic() - started


async def add_accounts(
    http: aiohttp.ClientSession, relay: RelayProcess, server: DovecotServer, count: int
) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def add(n: int) -> None:
        async with limit:
            await api(
                http,
                "POST",
                f"{relay.url}/v1/account",
                {
                    "account": f"box{n}",
                    "name": f"box{n}",
                    "email": user(n),
                    "imap": {
                        "host": server.host,
                        "port": server.tls_port,
                        "secure": True,
                        "auth": {"user": user(n), "pass": PASSWORD},
                    },
                },
            )

    await asyncio.gather(*(add(n) for n in range(count)))


# -- the bare pool (runs in a child process) --------------------------------------------------

BARE_OPTIONS = ClientOptions(connect_timeout=60.0, command_timeout=60.0, done_timeout=30.0)


async def bare_watch(
    host: str,
    port: int,
    context: ssl.SSLContext,
    n: int,
    limit: asyncio.Semaphore,
    ready: Callable[[], None],
    seen: Callable[[str, float], None],
) -> None:
    """One bare client: IDLE on INBOX; on EXISTS, DONE, UID FETCH the new mail, IDLE again."""
    arrived = asyncio.Event()

    def on_update(update: Update) -> None:
        if isinstance(update, Exists):
            arrived.set()

    async with limit:
        client = await ImapClient.connect(
            host, port, ssl=context, options=BARE_OPTIONS, on_update=on_update
        )
        await client.login(user(n), PASSWORD)
        selected = await client.select("INBOX")
        # What the relay asks for a new message (relay.sources.imap.sync.Session.items).
        items = imap_items(client.capabilities, auto_reply=True)
        uidnext = selected.uidnext or 1
        await client.idle_start()
    ready()
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            await client.idle_done()
            result = await client.uid_fetch(f"{uidnext}:*", items)
            now = time.time()
            for message in result.messages:
                # "n:*" answers with the last message when none is at or above n.
                if message.uid is None or message.uid < uidnext:
                    continue
                uidnext = message.uid + 1
                envelope = message.envelope
                if envelope is not None and envelope.message_id:
                    seen(envelope.message_id.decode(), now)
            await client.idle_start()
    finally:
        client.close()


async def bare_pool(host: str, port: int, ca_file: str, mailboxes: int) -> dict[str, Any]:
    """Watch every mailbox; print ``ready`` once all IDLE; on ``stop N`` (stdin), wait until N
    messages were fetched (at most ``SEEN_TIMEOUT`` s) and return when each was fetched."""
    context = ssl.create_default_context(cafile=ca_file)
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(50)
    fetched: dict[str, float] = {}
    changed = asyncio.Event()
    up = 0
    up_event = asyncio.Event()

    def ready() -> None:
        nonlocal up
        up += 1
        if up == mailboxes:
            up_event.set()

    def seen(message_id: str, at: float) -> None:
        fetched.setdefault(message_id, at)
        changed.set()

    tasks = [
        asyncio.create_task(bare_watch(host, port, context, n, limit, ready, seen))
        for n in range(mailboxes)
    ]
    all_up = asyncio.create_task(up_event.wait())
    await asyncio.wait([all_up, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not all_up.done():
        failed = next(t for t in tasks if t.done())
        all_up.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(all_up, *tasks, return_exceptions=True)
        raise RuntimeError(f"a bare client failed: {failed.exception()!r}")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    command = (await reader.readline()).decode().split()
    expected = int(command[1]) if len(command) == 2 and command[0] == "stop" else 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SEEN_TIMEOUT):
            while len(fetched) < expected:
                changed.clear()
                await changed.wait()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    # A client whose connection broke while the pushes ran (it fetched nothing after that).
    errors = [
        repr(o)
        for o in outcomes
        if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)
    ]
    return {"fetched": fetched, "errors": len(errors), "first_error": errors[0] if errors else None}


def run_bare_pool(args: argparse.Namespace) -> None:
    """The child process: run :func:`bare_pool`, write its result to a JSON file."""
    host, port, ca_file, mailboxes, out = args.bare_pool
    coro = bare_pool(host, int(port), ca_file, int(mailboxes))
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    Path(out).write_text(json.dumps(result))


class BarePool:
    """The bare pool's child process, stopped by its PID whatever happens."""

    def __init__(self, server: DovecotServer, ca_file: str, mailboxes: int, workdir: Path) -> None:
        self.out = workdir / "bare.json"
        self.log = workdir / "bare.log"
        self.args = [server.host, str(server.tls_port), ca_file, str(mailboxes), str(self.out)]
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BarePool:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                "--bare-pool",
                *self.args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        return self

    async def wait_ready(self, limit: float) -> float:
        """Seconds until every bare client IDLEs."""
        started = time.monotonic()
        assert self.proc is not None
        assert self.proc.stdout is not None
        async with asyncio.timeout(limit):
            line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"bare pool failed: {self.log.read_text(errors='replace')[-2000:]}")
        return time.monotonic() - started

    async def results(self, expected: int) -> dict[str, Any]:
        """Stop the pool once ``expected`` messages were fetched; what it fetched, and when."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"stop {expected}\n".encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(SEEN_TIMEOUT + 30):
            code = await self.proc.wait()
        if code != 0:
            raise RuntimeError(f"bare pool failed: {self.log.read_text(errors='replace')[-2000:]}")
        result: dict[str, Any] = json.loads(await asyncio.to_thread(self.out.read_text))
        return result

    async def __aexit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- pushes -----------------------------------------------------------------------------------


async def push(
    server: DovecotServer, order: list[int], rate: float
) -> tuple[dict[str, float], float]:
    """APPEND one message per entry of ``order`` (mailbox numbers), ``rate`` per second, from
    connections logged in beforehand. Returns when each APPEND was sent (by Message-ID,
    epoch seconds) and the rate achieved."""
    started: dict[str, float] = {}
    clients: dict[int, ImapClient] = {}
    limit = asyncio.Semaphore(CONCURRENCY)

    async def login(n: int) -> None:
        async with limit:
            client = await ImapClient.connect(server.host, server.port)
            await client.login(user(n), PASSWORD)
            clients[n] = client

    # Log in first, so that only the APPENDs themselves run at the measured rate.
    await asyncio.gather(*(login(n) for n in set(order)))
    progress(f"pushing {len(order)} messages")

    async def one(i: int, n: int) -> None:
        message_id = f"<push-{i}-{n}@bench>"
        body = f"Subject: push {i}\r\nMessage-ID: {message_id}\r\n\r\nx\r\n".encode()
        started[message_id] = time.time()
        await clients[n].append("INBOX", body)

    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    try:
        begin = loop.time()
        for i, n in enumerate(order):
            delay = begin + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, n)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for client in clients.values():
            client.close()
    times = sorted(started.values())
    achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return started, achieved


# -- the run ----------------------------------------------------------------------------------


async def run(
    server: DovecotServer,
    workdir: Path,
    ca_file: str,
    mailboxes: int,
    pushes: int,
    rate: float,
    restart: bool,
) -> dict[str, Any]:
    port = free_port()
    env = relay_env(
        workdir,
        port,
        {
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_SECRET": "bench-secret-for-credentials",
            "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
            "RELAY_LOG_LEVEL": "warning",
            "RELAY_IMAP_CA_BUNDLE": ca_file,
        },
    )
    relay = RelayProcess(workdir, port, env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=60)
    connect_s: float | None = None
    rss: int | None = None
    order = list(range(mailboxes))
    random.Random(7).shuffle(order)
    order = [order[i % mailboxes] for i in range(pushes)]
    async with (
        aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
        Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET, keep=True) as rx,
    ):
        await asyncio.to_thread(relay.start)
        try:
            await api(http, "POST", f"{relay.url}/v1/settings", {"serviceSecret": SERVICE_SECRET})
            route = await api(
                http, "POST", f"{relay.url}/v1/webhooks", {"url": rx.url, "events": ["messageNew"]}
            )
            rx.secret = route["secret"]
            await asyncio.sleep(1)
            assert relay.proc is not None
            baseline = rss_kib(relay.proc.pid)
            added = time.monotonic()
            await add_accounts(http, relay, server, mailboxes)
            await wait_connected(http, relay, mailboxes, 300)
            add_s = time.monotonic() - added
            if restart:
                await asyncio.to_thread(relay.stop)
                booted = time.monotonic()
                await asyncio.to_thread(relay.start, wait=False)
                await wait_connected(http, relay, mailboxes, 300)
                connect_s = time.monotonic() - booted
                await asyncio.sleep(3)
                assert relay.proc is not None
                rss = rss_kib(relay.proc.pid)
            progress(f"relay pid {relay.proc.pid}: accounts connected")
            async with BarePool(server, ca_file, mailboxes, workdir) as bare:
                bare_connect_s = await bare.wait_ready(300)
                await asyncio.sleep(2)
                base = rx.accepted_count
                started, achieved = await push(server, order, rate)
                with contextlib.suppress(TimeoutError):
                    await rx.wait_for(base + len(started), timeout=SEEN_TIMEOUT)
                bare_result = await bare.results(len(started))
        finally:
            await asyncio.to_thread(relay.stop)
    relay_ms: dict[str, float] = {}
    to_event: list[float] = []
    to_webhook: list[float] = []
    for delivery in rx.accepted():
        body = delivery.json()
        message_id = body["data"].get("messageId") if body.get("event") == "messageNew" else None
        if message_id in started and message_id not in relay_ms:
            relay_ms[message_id] = (delivery.received_at - started[message_id]) * 1000
            created = datetime.fromisoformat(body["date"]).timestamp()
            to_event.append((created - started[message_id]) * 1000)
            to_webhook.append((delivery.received_at - created) * 1000)
    fetched: dict[str, float] = bare_result["fetched"]
    bare_ms = {m: (at - started[m]) * 1000 for m, at in fetched.items() if m in started}
    relay_all = [relay_ms.get(m, math.inf) for m in started]
    bare_all = [bare_ms.get(m, math.inf) for m in started]
    relay_p99 = percentile(relay_all, 99)
    bare_p99 = percentile(bare_all, 99)
    return {
        "mailboxes": mailboxes,
        "pushes": len(started),
        "rate_target_per_s": rate,
        "rate_per_s": round(achieved, 1),
        "relay_p50_ms": ms(percentile(relay_all, 50)),
        "relay_p99_ms": ms(relay_p99),
        "bare_p50_ms": ms(percentile(bare_all, 50)),
        "bare_p99_ms": ms(bare_p99),
        "overhead_p99_ms": ms(relay_p99 - bare_p99),
        "goal_overhead_p99_ms": GOAL_OVERHEAD_P99_MS,
        "relay_missing": len(started) - len(relay_ms),
        "bare_missing": len(started) - len(bare_ms),
        "bare_errors": bare_result["errors"],
        "append_to_event_p50_ms": ms(percentile(to_event, 50)) if to_event else None,
        "append_to_event_p99_ms": ms(percentile(to_event, 99)) if to_event else None,
        "event_to_webhook_p50_ms": ms(percentile(to_webhook, 50)) if to_webhook else None,
        "event_to_webhook_p99_ms": ms(percentile(to_webhook, 99)) if to_webhook else None,
        "rss_mib": round(rss / 1024, 1) if rss is not None else None,
        "baseline_rss_mib": round(baseline / 1024, 1),
        "kib_per_mailbox": round((rss - baseline) / mailboxes, 1) if rss is not None else None,
        "connect_s": round(connect_s, 2) if connect_s is not None else None,
        "add_s": round(add_s, 2),
        "bare_connect_s": round(bare_connect_s, 2),
    }


def main() -> None:
    """Start Dovecot and the relay, measure, stop both, print one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=2000)
    parser.add_argument("--pushes", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0, help="pushes per second")
    parser.add_argument(
        "--skip-restart", action="store_true", help="no restart, no memory figures (shorter)"
    )
    # Internal: run as the bare pool's child process (HOST PORT CA_FILE MAILBOXES OUT_FILE).
    parser.add_argument("--bare-pool", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # One socket per mailbox in the relay and the Dovecot processes (children inherit).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.bare_pool:
        run_bare_pool(args)
        return
    # SIGTERM unwinds like an error, so that the relay, the bare pool and Dovecot are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        scale_dovecot(args.mailboxes) as server,
        tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir,
    ):
        ca_file = str(Path(workdir) / "dovecot-ca.pem")
        ca = server._ca
        assert ca is not None
        ca.cert_pem.write_to_path(ca_file)  # type: ignore[attr-defined]
        result = asyncio.run(
            run(
                server,
                Path(workdir),
                ca_file,
                args.mailboxes,
                args.pushes,
                args.rate,
                restart=not args.skip_restart,
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
