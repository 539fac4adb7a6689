"""Webhook delivery with and without event stream readers, same relay, same run.

A relay process (``relay serve``) delivers to the verifying receiver (its own process) while
this process stores events (batches of 500, as a busy source would). Each round runs twice:
alone, and with ``--clients`` concurrent ``GET /v1/events/stream`` readers (their own
process) reading every one of those events as they are stored. The figure is deliveries per
second (first event stored -> last delivery accepted); rounds alternate and the figures are
medians. Prints one JSON line:
``{alone_per_s, with_streams_per_s, ratio, slowdown, clients, streamed_min,
relay_cpu_ms_per_1000, engine, events, rounds, goal}`` where ``streamed_min`` is the fewest
events one reader got in a round (it should be ``events``), ``relay_cpu_ms_per_1000`` the
relay process's CPU (user, system; milliseconds per 1,000 events, median over the rounds)
alone and with the readers, and the goal is a slowdown of at most 10 %.

    python bench/stream.py [--events 5000] [--rounds 2] [--clients 100] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_database  # noqa: E402
from bench.webhooks import SERVICE_SECRET, _accepted, _wait_accepted, prepare_store  # noqa: E402
from relay.events.model import Event  # noqa: E402
from relay.store import Store, stream  # noqa: E402
from relay.store import events as events_store  # noqa: E402
from relay.store.engine import now_ms  # noqa: E402
from tests.peers.receiver import spawn as spawn_receiver  # noqa: E402
from tests.proc import RelayProcess, free_port, relay_env  # noqa: E402

TOKEN = "bench-" + "b" * 40
BATCH = 500
GOAL_SLOWDOWN = 0.10


async def readers(port: int, clients: int, after: str) -> None:
    """``--clients`` mode: read ``clients`` streams until SIGTERM; print the event counts."""
    counts = [0] * clients
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{port}/v1/events/stream?after={after}&event=messageNew"
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def read(i: int) -> None:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200, resp.status
                # Counting frames in whatever arrives (a line parser per event would make
                # the readers, on the same cores, the bottleneck).
                tail = b""
                async for chunk in resp.content.iter_any():
                    joined = tail + chunk
                    counts[i] += joined.count(b"\ndata: ")
                    tail = joined[-7:]

        tasks = [asyncio.create_task(read(i)) for i in range(clients)]
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(counts), flush=True)


async def produce(store: Store, n: int, round_no: int) -> None:
    for start in range(0, n, BATCH):
        batch = [
            Event("messageNew", "bench", {"n": i, "round": round_no}, now_ms(), path="INBOX")
            for i in range(start, min(n, start + BATCH))
        ]
        async with store.write() as conn:
            await events_store.record(conn, batch, default_service_url="http://bench")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds process ``pid`` has used (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def one_round(
    store: Store, stats: str, n: int, round_no: int, port: int, clients: int, relay_pid: int
) -> tuple[float, int | None, tuple[float, float]]:
    """Deliveries per second for ``n`` events; with ``clients`` readers, the fewest events
    one of them read; the relay's user and system CPU seconds for the round."""
    async with aiohttp.ClientSession() as http:
        base = await _accepted(http, stats)
        reader = None
        if clients:
            async with store.read() as conn:
                last, _ = await stream.counters(conn)
            reader = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--readers",
                str(clients),
                "--port",
                str(port),
                "--after",
                str(last),
                stdout=asyncio.subprocess.PIPE,
            )
            assert reader.stdout is not None
            assert (await reader.stdout.readline()).strip() == b"ready"
            await asyncio.sleep(1.0)  # every stream open and waiting
        cpu_before = cpu_seconds(relay_pid)
        started = time.perf_counter()
        await produce(store, n, round_no)
        finished = await _wait_accepted(http, stats, base + n)
        cpu_after = cpu_seconds(relay_pid)
    cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    streamed = None
    if reader is not None:
        assert reader.stdout is not None
        # Give the readers a moment to take the last events, then stop them.
        await asyncio.sleep(2.0)
        reader.send_signal(signal.SIGTERM)
        counts = json.loads((await reader.stdout.readline()) or b"[]")
        await reader.wait()
        streamed = min(counts) if counts else 0
    return n / (finished - started), streamed, cpu


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--readers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--after", default="0", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.readers:
        await readers(args.port, args.readers, args.after)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        admin = os.environ.get("RELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
        name = f"relay_bench_stream_{os.getpid()}"
        if args.engine == "postgresql":
            await pg_database(admin, name)
            store_url = f"{admin.rsplit('/', 1)[0]}/{name}"
        else:
            store_url = f"sqlite:///{workdir / 'relay.db'}"
        rx_port, port = free_port(), free_port()
        store, _cipher, secret = await prepare_store(store_url, f"http://127.0.0.1:{rx_port}/hook")
        receiver = await spawn_receiver(rx_port, secret, SERVICE_SECRET)
        env = relay_env(
            workdir,
            port,
            {
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_SECRET": "bench-secret-value",
                "RELAY_STORE_URL": store_url,
                "RELAY_LOG_LEVEL": "warning",
                "RELAY_IMAP_WATCH": "false",
                "RELAY_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
                # Events come from this process: the relay finds them by polling.
                "RELAY_WEBHOOKS_POLL_INTERVAL": "0.05",
                "RELAY_STREAM_POLL_INTERVAL": "0.05",
            },
        )
        relay = RelayProcess(workdir, port, env)
        await asyncio.to_thread(relay.start)
        stats = f"http://127.0.0.1:{rx_port}/stats"
        alone: list[float] = []
        together: list[float] = []
        streamed: list[int] = []
        cpu_alone: list[tuple[float, float]] = []
        cpu_together: list[tuple[float, float]] = []
        try:
            pid = relay.proc.pid
            for r in range(args.rounds):
                rate, _, cpu = await one_round(store, stats, args.events, 2 * r, port, 0, pid)
                alone.append(rate)
                cpu_alone.append(cpu)
                rate, got, cpu = await one_round(
                    store, stats, args.events, 2 * r + 1, port, args.clients, pid
                )
                together.append(rate)
                cpu_together.append(cpu)
                streamed.append(got or 0)
        finally:
            await asyncio.to_thread(relay.stop)
            receiver.send_signal(signal.SIGTERM)
            await receiver.wait()
            await store.close()
            if args.engine == "postgresql":
                await pg_database(admin, name, drop=True)
    a, w = statistics.median(alone), statistics.median(together)

    def per_1000(rounds: list[tuple[float, float]], part: int) -> float:
        return round(statistics.median(r[part] for r in rounds) * 1000 / args.events * 1000, 1)

    cpu = {
        "alone": [per_1000(cpu_alone, 0), per_1000(cpu_alone, 1)],
        "with_streams": [per_1000(cpu_together, 0), per_1000(cpu_together, 1)],
    }
    print(
        json.dumps(
            {
                "alone_per_s": round(a),
                "with_streams_per_s": round(w),
                "ratio": round(w / a, 3),
                "slowdown": round(1 - w / a, 3),
                "clients": args.clients,
                "streamed_min": min(streamed),
                "relay_cpu_ms_per_1000": cpu,
                "engine": args.engine,
                "events": args.events,
                "rounds": args.rounds,
                "goal": {"slowdown_max": GOAL_SLOWDOWN},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
