"""Memory per idle IMAP connection: open N IDLE connections to a tuned Dovecot, measure RSS.

    python bench/imap_conn_memory.py [--connections 500] [--plain] [--loop asyncio|uvloop]

Prints one JSON line: ``{"connections", "rss_mib", "kib_per_connection", ...}`` where
``kib_per_connection`` is the RSS growth from a warmed-up baseline (imports done, one
connection opened and closed) divided by the number of connections, each logged in, with
INBOX selected (CONDSTORE) and IDLE running, over TLS unless ``--plain``. uvloop is used when
installed unless ``--loop asyncio``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.imap import ClientOptions, ImapClient
from tests.peers.dovecot import DovecotServer, dovecot_server

USERS = 20
BATCH = 100


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def open_idle(server: DovecotServer, n: int, ctx: ssl.SSLContext | None) -> ImapClient:
    """One connection: login, SELECT INBOX (CONDSTORE), IDLE."""
    user = f"bench{n % USERS}@example.com"
    port = server.tls_port if ctx is not None else server.port
    assert port is not None
    client = await ImapClient.connect(
        server.host,
        port,
        ssl=ctx,
        options=ClientOptions(command_timeout=60, connect_timeout=60),
    )
    await client.login(user, "secret")
    await client.select("INBOX", condstore=True)
    await client.idle_start()
    return client


async def measure(server: DovecotServer, count: int, tls: bool) -> dict[str, object]:
    """Open ``count`` IDLE connections and report the memory they hold."""
    # One context for all connections, as the relay does: each SSLContext holds its own
    # certificate store (hundreds of KiB).
    ctx = server.client_ssl_context() if tls else None
    warm = await open_idle(server, 0, ctx)
    await warm.idle_done()
    await warm.logout()
    gc.collect()
    before = rss_bytes()
    started = time.monotonic()
    clients: list[ImapClient] = []
    for first in range(0, count, BATCH):
        batch = range(first, min(first + BATCH, count))
        clients += await asyncio.gather(*(open_idle(server, n, ctx) for n in batch))
    opened = time.monotonic() - started
    await asyncio.sleep(1)
    gc.collect()
    after = rss_bytes()
    alive = sum(1 for c in clients if c.idling and not c.closed)
    for client in clients:
        client.close()
    await asyncio.sleep(0.1)
    return {
        "connections": count,
        "alive": alive,
        "tls": tls,
        "rss_mib": round(after / 2**20, 1),
        "kib_per_connection": round((after - before) / count / 1024, 1),
        "open_seconds": round(opened, 2),
    }


def main() -> None:
    """Parse arguments, start Dovecot, measure, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--plain", action="store_true", help="no TLS")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=None)
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    loop_name = args.loop
    if loop_name is None:
        try:
            import uvloop

            loop_name = "uvloop"
        except ImportError:
            loop_name = "asyncio"
    users = {f"bench{i}@example.com": "secret" for i in range(USERS)}
    with dovecot_server(tls=True, tuned=True, users=users) as server:
        coro = measure(server, args.connections, tls=not args.plain)
        if loop_name == "uvloop":
            import uvloop

            result = uvloop.run(coro)
        else:
            result = asyncio.run(coro)
    result["loop"] = loop_name
    print(json.dumps(result))


if __name__ == "__main__":
    main()
