"""Missed IDLE pushes: what the push check costs and how soon it finds a missed message.

    python bench/imap_push_check.py [--mailboxes 200] [--window 60] [--spread 60]
                                    [--subconnection]

Starts a Dovecot (one ``imap`` process and one system uid per mailbox, plain IMAP) with one
user per mailbox, and two ``relay serve`` processes (each its own SQLite store and webhook
receiver) that watch every mailbox, each through its own in-process proxy that drops
``* N EXISTS`` / ``* N RECENT`` while the connection is in IDLE
(:class:`tests.peers.tcpproxy.ImapIdleDrops`: a server whose IDLE went quiet) and counts the
commands the relay sends. One relay runs with the push check at its default
(``imap.push_check`` 60 s), the other with it off: the same-run baseline. Both keep the
other defaults (INBOX's poller round every 30 s). With ``--subconnection`` every account
also has its Sent folder on an IDLE connection of its own (``subconnections``), which has
no poller round to share its breaks with: the counts per mailbox are then those of both
connections. Then:

1. once every account of both relays is connected, counts each relay's commands for
   ``--window`` s (default 60) while nothing changes: ``commands_per_mailbox_min`` (every
   tagged command, IDLE included), ``idle_breaks_per_mailbox_min`` (DONEs) and the UID
   FETCHes, each per mailbox per minute, with and without the check, and the difference;
2. delivers one message into each mailbox's Maildir (as a local delivery agent does), at
   random moments over ``--spread`` s (default 60: a whole check interval); the EXISTS
   that announces it is dropped on both relays' connections. Waits until the checked relay
   has reported all of them (at most push_check + 60 s after the last delivery) and
   reports the time from delivery to the signed
   ``messageNew`` webhook (``found_p50_s``, ``found_p99_s``, ``found_max_s``), how many
   it reported (``found``, ``duplicates``), and how many the baseline relay reported in
   the same time (``baseline_found``: without the check, none until something else syncs).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers.dovecot_scale import ScaleDovecot  # noqa: E402
from tests.peers.receiver import Receiver  # noqa: E402
from tests.peers.tcpproxy import ImapIdleDrops, TcpProxy  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "p" * 40
PASSWORD = "secret"
SERVICE_SECRET = "bench-service-secret"
CONCURRENCY = 20
PUSH_CHECK = 60.0


def user(n: int) -> str:
    return f"box{n}@example.com"


def progress(text: str) -> None:
    print(f"imap_push_check: {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@contextlib.contextmanager
def scale_dovecot(mailboxes: int) -> Iterator[ScaleDovecot]:
    root = Path(tempfile.mkdtemp(prefix="relay-dovecot-"))
    # Two relays' connections (two each with a subconnection) per mailbox, and room to spare.
    server = ScaleDovecot(root=root, tls=False, tuned=True, process_limit=4 * mailboxes + 100)
    for n in range(mailboxes):
        server.add_user(user(n), PASSWORD)
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def deliver(server: ScaleDovecot, n: int, message_id: str) -> float:
    """Put a message into mailbox ``n``'s Maildir (tmp, then new); returns when (epoch s)."""
    uid, home = server._homes()[user(n)]
    maildir = Path(home) / "Maildir"
    name = f"{time.time_ns()}.bench{n}.{os.getpid()}"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(f"Subject: missed {n}\r\nMessage-ID: {message_id}\r\n\r\nx\r\n".encode())
    os.chown(tmp, uid, 65534)
    at = time.time()
    tmp.rename(maildir / "new" / name)
    return at


async def api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        payload = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        return payload


class Side:
    """One relay process, its proxy to Dovecot and its webhook receiver."""

    def __init__(self, name: str, workdir: Path, server: ScaleDovecot, push_check: float):
        self.name = name
        self.server = server
        self.drops = ImapIdleDrops(("EXISTS", "RECENT"))
        self.proxy = TcpProxy(server.host, server.port, hook=self.drops)
        self.rx = Receiver(secret="whsec_" + "A" * 44, service_secret=SERVICE_SECRET, keep=True)
        port = free_port()
        env = relay_env(
            workdir / name,
            port,
            {
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": "bench-secret-for-credentials",
                "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
                "RELAY_LOG_LEVEL": "warning",
                "RELAY_IMAP_PUSH_CHECK": str(push_check),
            },
        )
        self.relay = RelayProcess(workdir / name, port, env)

    async def start(
        self, http: aiohttp.ClientSession, mailboxes: int, subconnections: list[str]
    ) -> None:
        await self.proxy.start()
        await self.rx.start()
        await asyncio.to_thread(self.relay.start)
        url = self.relay.url
        await api(http, "POST", f"{url}/v1/settings", {"serviceSecret": SERVICE_SECRET})
        route = await api(
            http, "POST", f"{url}/v1/webhooks", {"url": self.rx.url, "events": ["messageNew"]}
        )
        self.rx.secret = route["secret"]
        limit = asyncio.Semaphore(CONCURRENCY)

        async def add(n: int) -> None:
            async with limit:
                await api(
                    http,
                    "POST",
                    f"{url}/v1/account",
                    {
                        "account": f"box{n}",
                        "name": f"box{n}",
                        "email": user(n),
                        "imap": {
                            "host": self.proxy.host,
                            "port": self.proxy.port,
                            "secure": False,
                            "auth": {"user": user(n), "pass": PASSWORD},
                        },
                        "subconnections": subconnections,
                    },
                )

        await asyncio.gather(*(add(n) for n in range(mailboxes)))

    async def connected(self, http: aiohttp.ClientSession) -> int:
        url = f"{self.relay.url}/v1/accounts?state=connected&pageSize=1"
        return int((await api(http, "GET", url))["total"])

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.relay.stop)
        await self.rx.stop()
        await self.proxy.stop()

    def counts(self) -> Counter[str]:
        counts = Counter(self.drops.commands)
        counts["DONE"] = self.drops.done
        return counts

    def found(self, delivered: dict[str, float]) -> tuple[dict[str, float], int]:
        """Seconds from delivery to webhook per message found; and the duplicates."""
        seen: dict[str, float] = {}
        duplicates = 0
        for delivery in self.rx.accepted():
            body = delivery.json()
            message_id = body["data"].get("messageId")
            if message_id not in delivered:
                continue
            if message_id in seen:
                duplicates += 1
                continue
            seen[message_id] = delivery.received_at - delivered[message_id]
        return seen, duplicates


def per_minute(before: Counter[str], after: Counter[str], key: str, boxes: int, s: float) -> float:
    return round((after[key] - before[key]) / boxes / (s / 60), 3)


async def run(server: ScaleDovecot, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    mailboxes = args.mailboxes
    checked = Side("checked", workdir, server, PUSH_CHECK)
    baseline = Side("baseline", workdir, server, 0.0)
    sides = (checked, baseline)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        try:
            subconnections = ["Sent"] if args.subconnection else []
            await asyncio.gather(*(side.start(http, mailboxes, subconnections) for side in sides))
            started = time.monotonic()
            async with asyncio.timeout(300):
                while True:
                    counts = [await s.connected(http) for s in sides]
                    if min(counts) >= mailboxes:
                        break
                    await asyncio.sleep(0.2)
            connect_s = time.monotonic() - started
            progress(f"{2 * mailboxes} accounts connected in {connect_s:.1f} s; quiet window")
            await asyncio.sleep(5)  # the first poller rounds and IDLEs
            before = [s.counts() for s in sides]
            window_started = time.monotonic()
            await asyncio.sleep(args.window)
            window = time.monotonic() - window_started
            after = [s.counts() for s in sides]

            progress(f"delivering {mailboxes} messages over {args.spread} s")
            rng = random.Random(11)
            moments = sorted((rng.uniform(0, args.spread), n) for n in range(mailboxes))
            delivered: dict[str, float] = {}
            begin = time.monotonic()
            for at, n in moments:
                await asyncio.sleep(max(0.0, begin + at - time.monotonic()))
                message_id = f"<missed-{n}@bench>"
                delivered[message_id] = await asyncio.to_thread(deliver, server, n, message_id)
            with contextlib.suppress(TimeoutError):
                await checked.rx.wait_for(mailboxes, timeout=PUSH_CHECK + 60)
            waited = time.monotonic() - begin - args.spread
            await asyncio.sleep(3)  # duplicates, if any, would come now
        finally:
            await asyncio.gather(*(side.stop() for side in sides))
    found, duplicates = checked.found(delivered)
    baseline_found, baseline_duplicates = baseline.found(delivered)
    latency = list(found.values())
    figures: dict[str, Any] = {
        "mailboxes": mailboxes,
        "subconnection": args.subconnection,
        "push_check_s": PUSH_CHECK,
        "window_s": round(window, 1),
        "connect_s": round(connect_s, 1),
    }
    for key, name in (("", "commands"), ("DONE", "idle_breaks"), ("UID FETCH", "uid_fetch")):
        values = []
        for side, b, a in zip(sides, before, after, strict=True):
            if key:
                value = per_minute(b, a, key, mailboxes, window)
            else:
                total_b = Counter({"all": sum(v for k, v in b.items() if k != "DONE")})
                total_a = Counter({"all": sum(v for k, v in a.items() if k != "DONE")})
                value = per_minute(total_b, total_a, "all", mailboxes, window)
            values.append(value)
            prefix = "" if side is checked else "baseline_"
            figures[f"{prefix}{name}_per_mailbox_min"] = value
        figures[f"extra_{name}_per_mailbox_min"] = round(values[0] - values[1], 3)
    figures.update(
        {
            "missed": len(delivered),
            "dropped_exists": checked.drops.dropped["EXISTS"],
            "found": len(found),
            "duplicates": duplicates,
            "found_p50_s": round(percentile(latency, 50), 2) if latency else None,
            "found_p99_s": round(percentile(latency, 99), 2) if latency else None,
            "found_max_s": round(max(latency), 2) if latency else None,
            "waited_after_last_s": round(waited, 1),
            "baseline_found": len(baseline_found),
            "baseline_duplicates": baseline_duplicates,
            "baseline_dropped_exists": baseline.drops.dropped["EXISTS"],
        }
    )
    return figures


def main() -> None:
    """Start Dovecot and both relays, measure, stop everything, print one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--window", type=float, default=60.0, help="quiet seconds counted")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which to deliver")
    parser.add_argument(
        "--subconnection", action="store_true", help="Sent on an IDLE connection of its own too"
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # SIGTERM unwinds like an error, so that the relays and Dovecot are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        scale_dovecot(args.mailboxes) as server,
        tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir,
    ):
        result = asyncio.run(run(server, Path(workdir), args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
