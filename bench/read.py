"""Reading mail through the messages API, against a bare IMAP client on the same Dovecot.

    python bench/read.py [--messages 50] [--requests 300] [--attachment-mib 50] [--runs 3]

Starts a Dovecot and a ``relay serve`` process (SQLite store, ``RELAY_IMAP_WATCH=false``:
the messages API needs no listeners, so only the read path runs), APPENDs ``--messages``
messages with a plain and an HTML part (a few KiB each) and one message with a random
``--attachment-mib`` MiB attachment (base64 in the MIME, as mail is) to INBOX, adds a password
account through the API and lists INBOX through it for the ids. A bare client
(``relay.imap.ImapClient``, logged in, INBOX selected, no pool, no store, no HTTP) does the
same reads on the same server in the same run:

1. ``GET /v1/account/{id}/message/{message}?textType=*`` over one keep-alive aiohttp session,
   ``--requests`` times in sequence over the messages, each followed by the bare equivalent:
   ``UID FETCH uid (UID FLAGS ENVELOPE BODYSTRUCTURE INTERNALDATE RFC822.SIZE
   BODY.PEEK[HEADER])``, then ``BODY.PEEK[n]`` of the plain and the HTML part (numbers read
   from that BODYSTRUCTURE). ``overhead_p99_ms`` is relay p99 minus bare p99 (goal < 10).
2. ``GET /v1/account/{id}/attachment/{id}`` read to the end by the client, decoded MiB/s;
   the bare client runs the relay's minimum: partial ``BODY.PEEK[2]<offset.1048576>``
   FETCHes with incremental base64 decoding. Both sides hash the decoded bytes as they
   arrive and must match the original's sha256. One untimed warm-up download each, then
   ``--runs`` timed runs alternating relay and bare; the best run of each is reported
   (``download_ratio`` = relay / bare, goal >= 0.7).
3. During every timed relay download, the relay's VmRSS is sampled every ~5 ms from
   ``/proc/<pid>/status``; ``rss_growth_mib`` is the largest peak minus the RSS just before
   that download (goal < 8).

Prints one JSON line: ``{messages, requests, message_p50_ms, message_p99_ms, bare_p50_ms,
bare_p99_ms, overhead_p50_ms, overhead_p99_ms, attachment_mib, download_mib_s,
bare_download_mib_s, download_ratio, download_pick, rss_growth_mib, engine, watch, goals}``
plus each run's MiB/s, ``rss_growth_first_mib`` (the warm-up download, cold buffers) and
``rss_samples_min`` (fewest RSS samples taken during one timed download).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.imap import FetchedMessage, ImapClient  # noqa: E402
from tests.peers.dovecot import DovecotServer, dovecot_server  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

USER, PASSWORD = "reader@example.com", "secret"
ACCOUNT = "reader"
TOKEN = "bench-" + "r" * 40
CHUNK = 1024 * 1024  # the relay's default mailbox.chunk_bytes
WARMUP_REQUESTS = 10
META = ["UID", "FLAGS", "ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE", "RFC822.SIZE"]
MiB = 1024 * 1024

GOAL_OVERHEAD_P99_MS = 10.0
GOAL_DOWNLOAD_RATIO = 0.7
GOAL_RSS_GROWTH_MIB = 8.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def rss_kib(pid: int) -> int:
    """VmRSS of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))


def text_message(n: int) -> bytes:
    """A multipart/alternative message of a few KiB: a plain and an HTML part."""
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.com>"
    msg["To"] = f"Reader <{USER}>"
    msg["Subject"] = f"Read bench {n}"
    msg["Message-ID"] = f"<read-{n}@bench>"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    line = f"Message {n}: the quick brown fox jumps over the lazy dog. "
    msg.set_content((line * 4 + "\n") * 25)
    msg.add_alternative(
        "<html><body>" + "".join(f"<p>{line * 4}</p>\n" for _ in range(25)) + "</body></html>",
        subtype="html",
    )
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def attachment_message(payload: bytes) -> bytes:
    """multipart/mixed: a short text part (1) and ``payload`` base64-encoded (part 2)."""
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    head = (
        "From: Sender <sender@example.com>\r\n"
        f"To: Reader <{USER}>\r\n"
        "Subject: Read bench attachment\r\n"
        "Message-ID: <read-attachment@bench>\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b-read-bench"\r\n'
        "\r\n"
        "--b-read-bench\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "The attachment.\r\n"
        "--b-read-bench\r\n"
        "Content-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="blob.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode()
    return head + encoded + b"--b-read-bench--\r\n"


def leaves(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``[(section, "type/subtype"), ...]``: the leaf parts of a BODYSTRUCTURE, in order."""
    if node.is_multipart:
        out: list[tuple[str, str]] = []
        for index, child in enumerate(node[0], 1):
            out += leaves(child, f"{prefix}{index}.")
        return out
    return [(prefix.rstrip(".") or "1", f"{node[0].decode()}/{node[1].decode()}".lower())]


def text_sections(node: Any) -> list[str]:
    """Part numbers of the first text/plain and text/html parts of a BODYSTRUCTURE."""
    first: dict[str, str] = {}
    for section, kind in leaves(node):
        if kind in ("text/plain", "text/html"):
            first.setdefault(kind, section)
    return list(first.values())


def body_item(fetched: FetchedMessage, section: str) -> bytes:
    """The ``BODY[section]`` (or ``BODY[section]<offset>``) bytes of a FETCH response."""
    for key, value in fetched.attributes.items():
        if key == f"BODY[{section}]" or key.startswith(f"BODY[{section}]<"):
            return bytes(value or b"")
    raise RuntimeError(f"no BODY[{section}] in {sorted(fetched.attributes)}")


async def bare_message(client: ImapClient, uid: int) -> int:
    """What the relay must do at minimum for a message with its text; returns bytes read."""
    fetched = (await client.uid_fetch(uid, [*META, "BODY.PEEK[HEADER]"])).by_uid()[uid]
    total = len(body_item(fetched, "HEADER"))
    for section in text_sections(fetched.bodystructure):
        part = (await client.uid_fetch(uid, [f"BODY.PEEK[{section}]"])).by_uid()[uid]
        total += len(body_item(part, section))
    return total


async def bare_download(client: ImapClient, uid: int, section: str) -> tuple[int, str]:
    """Partial FETCHes of ``section`` in CHUNK pieces, base64-decoded as they come."""
    digest = hashlib.sha256()
    offset = size = 0
    pending = b""
    while True:
        item = f"BODY.PEEK[{section}]<{offset}.{CHUNK}>"
        piece = body_item((await client.uid_fetch(uid, [item])).by_uid()[uid], section)
        offset += len(piece)
        data = pending + piece.translate(None, b"\r\n")
        whole = len(data) - len(data) % 4
        decoded = binascii.a2b_base64(data[:whole])
        pending = data[whole:]
        digest.update(decoded)
        size += len(decoded)
        if len(piece) < CHUNK:
            break
    tail = binascii.a2b_base64(pending) if pending else b""
    digest.update(tail)
    return size + len(tail), digest.hexdigest()


async def relay_download(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """GET the attachment and read it to the end, hashing as it arrives."""
    digest = hashlib.sha256()
    size = 0
    async with http.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status} {await resp.text()}")
        async for chunk in resp.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        payload = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        return payload


async def seed(server: DovecotServer, messages: int, payload: bytes) -> None:
    """APPEND the text messages and the attachment message to INBOX."""
    writer = await ImapClient.connect(server.host, server.port)
    try:
        await writer.login(USER, PASSWORD)
        for n in range(messages):
            await writer.append("INBOX", text_message(n))
        await writer.append("INBOX", attachment_message(payload))
        await writer.logout()
    finally:
        writer.close()


async def latency(
    http: aiohttp.ClientSession,
    bare: ImapClient,
    base: str,
    targets: list[tuple[str, int]],
    requests: int,
) -> tuple[list[float], list[float]]:
    """Relay GET and bare reads of the same message, one after the other, ``requests`` times."""
    relay_ms: list[float] = []
    bare_ms: list[float] = []
    for n in range(WARMUP_REQUESTS + requests):
        message, uid = targets[n % len(targets)]
        started = time.perf_counter()
        async with http.get(f"{base}/message/{message}", params={"textType": "*"}) as resp:
            raw = await resp.read()
        took = time.perf_counter() - started
        if resp.status != 200:
            raise RuntimeError(f"GET message {message}: {resp.status} {raw[:300]!r}")
        text = json.loads(raw)["text"]
        if "quick brown fox" not in text.get("plain", "") or "<p>" not in text.get("html", ""):
            raise RuntimeError(f"message {message}: text missing: {sorted(text)}")
        started = time.perf_counter()
        await bare_message(bare, uid)
        bare_took = time.perf_counter() - started
        if n >= WARMUP_REQUESTS:
            relay_ms.append(took * 1000)
            bare_ms.append(bare_took * 1000)
    return relay_ms, bare_ms


async def downloads(
    http: aiohttp.ClientSession,
    bare: ImapClient,
    relay_pid: int,
    url: str,
    uid: int,
    section: str,
    expected: tuple[int, str],
    runs: int,
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Warm-up, then ``runs`` alternating timed downloads: MiB/s each side, RSS growth."""

    def check(got: tuple[int, str], who: str) -> None:
        if got != expected:
            raise RuntimeError(f"{who}: got {got[0]} bytes sha256 {got[1]}, want {expected}")

    before = rss_kib(relay_pid)
    with RssSampler(relay_pid) as sampler:
        check(await relay_download(http, url), "relay warm-up")
    first_kib = sampler.peak_kib - before
    check(await bare_download(bare, uid, section), "bare warm-up")
    relay_rates: list[float] = []
    bare_rates: list[float] = []
    growth_kib = 0
    samples = sys.maxsize
    for _ in range(runs):
        await asyncio.sleep(0.2)  # let the relay settle (pool return, GC) before the baseline
        before = rss_kib(relay_pid)
        with RssSampler(relay_pid) as sampler:
            started = time.perf_counter()
            got = await relay_download(http, url)
            took = time.perf_counter() - started
        check(got, "relay")
        relay_rates.append(expected[0] / MiB / took)
        growth_kib = max(growth_kib, sampler.peak_kib - before)
        samples = min(samples, sampler.samples)
        started = time.perf_counter()
        got = await bare_download(bare, uid, section)
        took = time.perf_counter() - started
        check(got, "bare")
        bare_rates.append(expected[0] / MiB / took)
    return (
        relay_rates,
        bare_rates,
        {
            "rss_growth_mib": round(growth_kib / 1024, 2),
            "rss_growth_first_mib": round(first_kib / 1024, 2),
            "rss_samples_min": samples,
        },
    )


async def run(
    server: DovecotServer, relay: RelayProcess, args: argparse.Namespace
) -> dict[str, Any]:
    payload = os.urandom(args.attachment_mib * MiB)
    expected = (len(payload), hashlib.sha256(payload).hexdigest())
    await seed(server, args.messages, payload)
    del payload
    assert relay.proc is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        await api(
            http,
            "POST",
            f"{relay.url}/v1/account",
            {
                "account": ACCOUNT,
                "name": ACCOUNT,
                "email": USER,
                "imap": {
                    "host": server.host,
                    "port": server.port,
                    "secure": False,
                    "auth": {"user": USER, "pass": PASSWORD},
                },
            },
        )
        base = f"{relay.url}/v1/account/{ACCOUNT}"
        listed = await api(http, "GET", f"{base}/messages?path=INBOX&pageSize=1000")
        entries = listed["messages"]
        with_attachment = [e for e in entries if e.get("attachments")]
        targets = [(e["id"], int(e["uid"])) for e in entries if not e.get("attachments")]
        if len(targets) != args.messages or len(with_attachment) != 1:
            raise RuntimeError(f"listed {len(entries)} messages: {entries[:2]}")
        targets.sort(key=lambda t: t[1])
        attachment = with_attachment[0]["attachments"][0]

        bare = await ImapClient.connect(server.host, server.port)
        try:
            await bare.login(USER, PASSWORD)
            await bare.select("INBOX")
            found = (await bare.uid_fetch(int(with_attachment[0]["uid"]), META)).by_uid()
            bare_uid = next(iter(found))
            bare_section = next(
                section
                for section, kind in leaves(found[bare_uid].bodystructure)
                if kind == "application/octet-stream"
            )
            relay_ms, bare_ms = await latency(http, bare, base, targets, args.requests)
            relay_rates, bare_rates, rss = await downloads(
                http,
                bare,
                relay.proc.pid,
                f"{base}/attachment/{attachment['id']}",
                bare_uid,
                bare_section,
                expected,
                args.runs,
            )
            await bare.logout()
        finally:
            bare.close()

    overhead = percentile(relay_ms, 99) - percentile(bare_ms, 99)
    download, bare_download_rate = max(relay_rates), max(bare_rates)
    ratio = download / bare_download_rate
    return {
        "messages": args.messages,
        "requests": args.requests,
        "message_p50_ms": round(percentile(relay_ms, 50), 2),
        "message_p99_ms": round(percentile(relay_ms, 99), 2),
        "bare_p50_ms": round(percentile(bare_ms, 50), 2),
        "bare_p99_ms": round(percentile(bare_ms, 99), 2),
        "overhead_p50_ms": round(percentile(relay_ms, 50) - percentile(bare_ms, 50), 2),
        "overhead_p99_ms": round(overhead, 2),
        "attachment_mib": args.attachment_mib,
        "download_mib_s": round(download, 1),
        "bare_download_mib_s": round(bare_download_rate, 1),
        "download_ratio": round(ratio, 3),
        "download_pick": f"best of {args.runs}",
        "download_runs_mib_s": [round(r, 1) for r in relay_rates],
        "bare_download_runs_mib_s": [round(r, 1) for r in bare_rates],
        **rss,
        "engine": "sqlite",
        "watch": False,
        "goals": {
            "overhead_p99_ms_lt_10": overhead < GOAL_OVERHEAD_P99_MS,
            "download_ratio_ge_0_7": ratio >= GOAL_DOWNLOAD_RATIO,
            "rss_growth_mib_lt_8": rss["rss_growth_mib"] < GOAL_RSS_GROWTH_MIB,
        },
    }


def main() -> None:
    """Start Dovecot and the relay, measure, stop both, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--attachment-mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with (
        dovecot_server(users={USER: PASSWORD}) as server,
        tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir,
    ):
        port = free_port()
        env = relay_env(
            Path(workdir),
            port,
            {
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": "bench-secret-for-credentials",
                "RELAY_IMAP_WATCH": "false",
                "RELAY_LOG_LEVEL": "warning",
            },
        )
        relay = RelayProcess(Path(workdir), port, env)
        relay.start()
        try:
            result = asyncio.run(run(server, relay, args))
        except BaseException:
            print(relay.output()[-4000:], file=sys.stderr)
            raise
        finally:
            relay.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
