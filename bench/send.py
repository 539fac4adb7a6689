"""Sending throughput: the durable outbox against a bare aiosmtplib loop, same SMTP server.

The SMTP server (aiosmtpd, accepting everything) runs in its own process. The relay runs in
this process on SQLite with its HTTP API on a free port: N submits go through the API at a
fixed concurrency (``submits_per_s``: accepted and stored), while the outbox worker sends
them (``sent_per_s``: first submit -> last message recorded as sent). The bare loop sends N
messages with aiosmtplib, one connection per message, with the worker's concurrency (the
worker keeps its connections open between messages, so ``ratio`` compares it with a client
that does not; the bare loop stores nothing). Prints one JSON line:
``{submits_per_s, sent_per_s, bare_per_s, ratio, messages, concurrency, engine}``.

    python bench/send.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import aiosmtplib
from aiohttp import web
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.api.keys import STORE  # noqa: E402
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
from relay.store.schema import OutboxStatus, outbox  # noqa: E402
from tests.proc import free_port  # noqa: E402

TOKEN = "bench-" + "b" * 40
SUBMIT_CONCURRENCY = 32
SEND_CONCURRENCY = 16
ME = "bench@example.com"

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


def _message(i: int) -> bytes:
    return (
        f"From: {ME}\r\nTo: rita@example.net\r\nSubject: n{i}\r\n"
        f"Message-ID: <{i}.bench@example.com>\r\n\r\nHello {i}\r\n"
    ).encode()


async def bare(port: int, n: int) -> float:
    """Messages per second with a plain aiosmtplib loop."""
    sem = asyncio.Semaphore(SEND_CONCURRENCY)

    async def one(i: int) -> None:
        async with sem:
            await aiosmtplib.send(
                _message(i),
                sender=ME,
                recipients=["rita@example.net"],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def durable(port: int, n: int, workdir: Path) -> tuple[float, float]:
    """(submits per second, messages sent per second) through the relay."""
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=free_port()),
        store=StoreSettings(url=f"sqlite:///{workdir / 'relay.db'}"),
        security=SecuritySettings(
            api_token=TOKEN, secret="bench-secret-value-123", key_file=str(workdir / "k")
        ),
        log=LogSettings(level="error", format="json"),
        imap=ImapSettings(watch=False),
        send=SendSettings(concurrency=SEND_CONCURRENCY, poll_interval=0.05),
    )
    app = create_app(settings, base_dir=workdir)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.server.port)
    await site.start()
    try:
        url = f"http://127.0.0.1:{settings.server.port}"
        async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            account = {
                "account": "bench",
                "name": "Bench",
                "email": ME,
                "imap": {"host": "127.0.0.1", "port": 1, "auth": {"user": ME, "pass": "x"}},
                "smtp": {"host": "127.0.0.1", "port": port, "secure": False},
            }
            async with http.post("/v1/account", json=account) as r:
                assert r.status == 200, await r.text()
            sem = asyncio.Semaphore(SUBMIT_CONCURRENCY)

            async def one(i: int) -> None:
                body = {
                    "to": [{"address": "rita@example.net"}],
                    "subject": f"n{i}",
                    "text": f"Hello {i}",
                }
                async with sem, http.post("/v1/account/bench/submit", json=body) as r:
                    assert r.status == 200, await r.text()

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            submitted = time.perf_counter() - started
            store = app[STORE]
            query = (
                select(func.count()).select_from(outbox).where(outbox.c.status == OutboxStatus.SENT)
            )
            while True:
                async with store.read() as conn:
                    if int(await conn.scalar(query) or 0) >= n:
                        break
                await asyncio.sleep(0.02)
            sent = time.perf_counter() - started
    finally:
        await runner.cleanup()
    return n / submitted, n / sent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    configure(LogSettings(level="error", format="json"))
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SINK, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert sink.stdout is not None
        await sink.stdout.readline()
        bare_rate = await bare(port, args.messages)
        with tempfile.TemporaryDirectory() as tmp:
            submit_rate, sent_rate = await durable(port, args.messages, Path(tmp))
    finally:
        sink.terminate()
        await sink.wait()
    print(
        json.dumps(
            {
                "submits_per_s": round(submit_rate, 1),
                "sent_per_s": round(sent_rate, 1),
                "bare_per_s": round(bare_rate, 1),
                "ratio": round(sent_rate / bare_rate, 3),
                "messages": args.messages,
                "concurrency": SEND_CONCURRENCY,
                "engine": "sqlite",
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
