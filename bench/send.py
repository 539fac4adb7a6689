"""Sending throughput: the durable outbox against a bare aiosmtplib loop, same SMTP server.

The SMTP server (aiosmtpd, accepting everything) runs in its own process. The relay runs in
this process on SQLite with its HTTP API on a free port, in two runs on fresh databases:

- a burst: N submits go through the API at a fixed concurrency while the outbox worker
  sends them: ``submits_per_s`` (accepted and stored) and ``end_to_end_per_s`` (first
  submit -> last message recorded as sent; bounded by the submits, which share the process
  and its one core with the worker);
- sending: the N messages are submitted to be sent a day later, then all made due at once
  (the worker is told, as after a submit): ``sent_per_s`` (due -> last message recorded as
  sent). This is what the baseline measures, so ``ratio`` is ``sent_per_s / bare_per_s``: the
  median over ``--rounds`` pairs of a bare run and a sending run, one just after the other.

The fair baseline (``bare_per_s``) sends the same N messages (built by the relay's MIME
builder from the same payloads, so of the same size: ``message_bytes``) with plain
aiosmtplib clients that do what the worker's session pool does: the worker's concurrency,
messages spread over the same accounts, each client keeping one connection per account
open from message to message. It stores nothing. ``bare_per_message_per_s`` is the same
loop opening one connection per message. Prints one JSON line: ``{submits_per_s,
sent_per_s, bare_per_s, ratio, ratio_range, end_to_end_per_s, bare_per_message_per_s,
message_bytes, messages, accounts, concurrency, engine, rounds, goals}``.

    python bench/send.py [--messages 2000] [--accounts 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp import web
from sqlalchemy import update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.api.keys import OUTBOX, STORE  # noqa: E402
from relay.app import create_app  # noqa: E402
from relay.config import (  # noqa: E402
    ImapSettings,
    LogSettings,
    SecuritySettings,
    SendSettings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from relay.log import configure  # noqa: E402
from relay.send.mime import build  # noqa: E402
from relay.send.model import Address, Submit  # noqa: E402
from relay.store.engine import Wake, now_ms  # noqa: E402
from relay.store.schema import outbox  # noqa: E402
from tests.proc import free_port  # noqa: E402

TOKEN = "bench-" + "b" * 40
SUBMIT_CONCURRENCY = 32
SEND_CONCURRENCY = 16
RCPT = "rita@example.net"

SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink"), "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""


def _payload(i: int) -> dict[str, Any]:
    """The submit payload of message ``i``."""
    return {"to": [{"address": RCPT}], "subject": f"n{i}", "text": f"Hello {i}"}


def _account(i: int, accounts: int) -> str:
    return f"bench{i % accounts}"


def _email(account: str) -> str:
    return f"{account}@example.com"


def _message(i: int, accounts: int) -> bytes:
    """Message ``i`` as the relay builds it from :func:`_payload`."""
    submit = Submit.model_validate(_payload(i))
    return bytes(build(submit, Address(name="Bench", address=_email(_account(i, accounts)))))


async def bare_per_message(port: int, messages: list[bytes], accounts: int) -> float:
    """Messages per second with aiosmtplib opening one connection per message."""
    sem = asyncio.Semaphore(SEND_CONCURRENCY)
    n = len(messages)

    async def one(i: int) -> None:
        async with sem:
            await aiosmtplib.send(
                messages[i],
                sender=_email(_account(i, accounts)),
                recipients=[RCPT],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
                local_hostname="bench",
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def bare_kept(port: int, messages: list[bytes], accounts: int) -> float:
    """Messages per second with aiosmtplib clients that keep one connection per account.

    ``SEND_CONCURRENCY`` clients take messages from one queue; each keeps a connection open
    per account it has sent for, as the worker's session pool does.
    """
    n = len(messages)
    todo: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        todo.put_nowait(i)

    async def lane() -> None:
        kept: dict[str, aiosmtplib.SMTP] = {}
        try:
            while not todo.empty():
                i = todo.get_nowait()
                account = _account(i, accounts)
                client = kept.get(account)
                if client is None:
                    client = kept[account] = aiosmtplib.SMTP(
                        hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench"
                    )
                    await client.connect()
                await client.sendmail(_email(account), [RCPT], messages[i])
        finally:
            for client in kept.values():
                await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(SEND_CONCURRENCY)))
    return n / (time.perf_counter() - started)


@asynccontextmanager
async def relay(workdir: Path, *, deliver: bool) -> AsyncIterator[tuple[web.Application, str]]:
    """The relay on ``workdir``'s SQLite database, and its base URL; ``deliver``: with the
    outbox worker."""
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=free_port()),
        store=StoreSettings(url=f"sqlite:///{workdir / 'relay.db'}"),
        security=SecuritySettings(
            api_token=TOKEN, secret="bench-secret-value-123", key_file=str(workdir / "k")
        ),
        log=LogSettings(level="error", format="json"),
        imap=ImapSettings(watch=False),
        send=SendSettings(concurrency=SEND_CONCURRENCY, poll_interval=0.05, deliver=deliver),
    )
    app = create_app(settings, base_dir=workdir)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", settings.server.port)
        await site.start()
        yield app, f"http://127.0.0.1:{settings.server.port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def api(url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


async def add_accounts(http: aiohttp.ClientSession, sink_port: int, accounts: int) -> None:
    for a in range(accounts):
        name = _account(a, accounts)
        imap = {"host": "127.0.0.1", "port": 1, "auth": {"user": name, "pass": "x"}}
        account = {
            "account": name,
            "name": "Bench",
            "email": _email(name),
            "imap": imap,
            "smtp": {"host": "127.0.0.1", "port": sink_port, "secure": False},
        }
        async with http.post("/v1/account", json=account) as r:
            assert r.status == 200, await r.text()


async def submit_all(
    http: aiohttp.ClientSession, n: int, accounts: int, *, send_at: str | None = None
) -> None:
    """Submit the N messages at ``SUBMIT_CONCURRENCY``, to be sent at ``send_at``."""
    sem = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    extra = {"sendAt": send_at} if send_at else {}

    async def one(i: int) -> None:
        path = f"/v1/account/{_account(i, accounts)}/submit"
        async with sem, http.post(path, json={**_payload(i), **extra}) as r:
            assert r.status == 200, await r.text()

    await asyncio.gather(*(one(i) for i in range(n)))


async def all_due(app: web.Application) -> None:
    """Make every queued message due now, and tell the worker (as a submit does)."""
    async with app[STORE].write(notify=Wake.OUTBOX) as conn:
        await conn.execute(update(outbox).values(next_attempt_ms=now_ms()))


async def all_sent(app: web.Application, n: int) -> None:
    """Return once the worker has recorded N messages as sent (its counter is incremented
    after the outcome's commit; reading it costs the relay nothing, unlike a query)."""
    # A poll: the worker offers no event to wait on, and the bench should not add one.
    while app[OUTBOX].counters.sent < n:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def burst(sink_port: int, n: int, accounts: int, workdir: Path) -> dict[str, float]:
    """``submits_per_s`` and ``end_to_end_per_s``: N submits while the worker sends them."""
    await asyncio.to_thread(workdir.mkdir)
    async with relay(workdir, deliver=True) as (app, url), api(url) as http:
        await add_accounts(http, sink_port, accounts)
        started = time.perf_counter()
        await submit_all(http, n, accounts)
        submits = n / (time.perf_counter() - started)
        await all_sent(app, n)
        end_to_end = n / (time.perf_counter() - started)
    return {"submits_per_s": submits, "end_to_end_per_s": end_to_end}


async def queued(sink_port: int, n: int, accounts: int, workdir: Path) -> float:
    """``sent_per_s``: N messages queued for later, made due at once, until the last is sent."""
    await asyncio.to_thread(workdir.mkdir)
    async with relay(workdir, deliver=True) as (app, url), api(url) as http:
        await add_accounts(http, sink_port, accounts)
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        await submit_all(http, n, accounts, send_at=later)
        started = time.perf_counter()
        await all_due(app)
        await all_sent(app, n)
        return n / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    configure(LogSettings(level="error", format="json"))
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SINK, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert sink.stdout is not None
        await sink.stdout.readline()
        messages = [_message(i, args.accounts) for i in range(args.messages)]
        per_message_rate = await bare_per_message(port, messages, args.accounts)
        # The machine's speed drifts from one run to the next: each sending run is paired
        # with a bare run just before it, and the medians are reported.
        bare_rates: list[float] = []
        sent_rates: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                bare_rates.append(await bare_kept(port, messages, args.accounts))
                sent_rates.append(
                    await queued(port, args.messages, args.accounts, Path(tmp) / f"queued{r}")
                )
            rates = await burst(port, args.messages, args.accounts, Path(tmp) / "burst")
    finally:
        sink.terminate()
        await sink.wait()
    ratios = sorted(s / b for s, b in zip(sent_rates, bare_rates, strict=True))
    bare_rate = statistics.median(bare_rates)
    rates["sent_per_s"] = statistics.median(sent_rates)
    print(
        json.dumps(
            {
                "submits_per_s": round(rates["submits_per_s"], 1),
                "sent_per_s": round(rates["sent_per_s"], 1),
                "bare_per_s": round(bare_rate, 1),
                "ratio": round(statistics.median(ratios), 3),
                "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
                "end_to_end_per_s": round(rates["end_to_end_per_s"], 1),
                "bare_per_message_per_s": round(per_message_rate, 1),
                "message_bytes": len(messages[0]),
                "messages": args.messages,
                "accounts": args.accounts,
                "concurrency": SEND_CONCURRENCY,
                "engine": "sqlite",
                "rounds": args.rounds,
                "goals": {"ratio": 0.5, "met": statistics.median(ratios) >= 0.5},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
