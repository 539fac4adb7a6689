"""The admin UI's account list over 10,000 accounts: how long one page takes to render.

    python bench/admin_page.py [--accounts 10000] [--runs 30]

Builds a SQLite store with ``--accounts`` IMAP password accounts (bulk ``INSERT``, their
secrets encrypted as the API stores them), starts the relay in this process on a free port
of 127.0.0.1 (no listeners), signs in to ``/admin`` with the API token and fetches, ``--runs``
times each: the first page, a page deep in the list (page 150, offset 7,450), and a search by
email. Every answer must be 200 and list what it should.

Prints one JSON line: ``{accounts, runs, first_ms, deep_ms, search_ms}`` with the median and
p95 of each in milliseconds (wall time of the whole request over loopback, as a browser
would wait for it), and ``goal_ms`` (100).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, CookieJar, web

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from relay.api.admin.accounts import PAGE_SIZE  # noqa: E402
from relay.app import create_app  # noqa: E402
from relay.auth.crypto import load_cipher  # noqa: E402
from relay.config import ImapSettings, SecuritySettings, ServerSettings, Settings, StoreSettings  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store.engine import now_ms  # noqa: E402
from relay.store.migrate import migrate  # noqa: E402
from relay.store.schema import accounts  # noqa: E402

TOKEN = "bench-token-" + "0" * 32
GOAL_MS = 100.0


async def fill(settings: Settings, base: Path, count: int) -> None:
    store = Store.open(settings.store)
    cipher = load_cipher(settings.security, base_dir=base)
    try:
        await migrate(store)
        ms = now_ms()
        rows: list[dict[str, Any]] = []
        for n in range(count):
            account = f"acct-{n:05}"
            rows.append(
                {
                    "id": account,
                    "name": f"Mailbox {n}",
                    "email": f"user{n}@example.com",
                    "backend": "imap",
                    "state": ("connected", "connectError", "init")[n % 3],
                    "config": {
                        "imap": {
                            "host": "imap.example.com",
                            "port": 993,
                            "secure": True,
                            "auth": {"user": f"user{n}@example.com"},
                        }
                    },
                    "secrets": cipher.encrypt_json(
                        {"imap.auth.pass": f"pw-{n}"}, context=f"accounts/{account}/secrets"
                    ),
                    "created_ms": ms,
                    "updated_ms": ms,
                }
            )
        async with store.write() as conn:
            for i in range(0, count, 1000):
                await conn.execute(accounts.insert(), rows[i : i + 1000])
    finally:
        await store.close()


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


async def run(count: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relay-admin-bench-") as tmp:
        base = Path(tmp)
        settings = Settings(
            server=ServerSettings(host="127.0.0.1", port=0),
            store=StoreSettings(url=f"sqlite:///{base / 'relay.db'}"),
            security=SecuritySettings(api_token=TOKEN, secret="bench-secret-for-credentials"),
            imap=ImapSettings(watch=False),
        )
        await fill(settings, base, count)
        runner = web.AppRunner(create_app(settings, base_dir=base), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/admin"
        try:
            # unsafe: keep cookies of an IP address host (127.0.0.1).
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
                login = await (await http.get(f"{url}/login")).text()
                csrf = re.search(r'name="csrf" value="([^"]+)"', login)
                assert csrf is not None
                resp = await http.post(f"{url}/login", data={"csrf": csrf.group(1), "token": TOKEN})
                assert resp.status == 200, resp.status
                deep = (count // PAGE_SIZE) - 50
                cases = {
                    "first": (f"{url}/accounts", PAGE_SIZE),
                    "deep": (f"{url}/accounts?page={deep}", PAGE_SIZE),
                    "search": (f"{url}/accounts?query=user4242%40example.com", 1),
                }
                out: dict[str, Any] = {"accounts": count, "runs": runs}
                for name, (target, rows) in cases.items():
                    samples = []
                    for _ in range(runs):
                        started = time.perf_counter()
                        resp = await http.get(target)
                        html = await resp.text()
                        samples.append((time.perf_counter() - started) * 1000)
                        assert resp.status == 200
                        assert html.count('href="/admin/accounts/acct-') == rows, name
                    out[f"{name}_ms"] = _summary(samples)
                out["goal_ms"] = GOAL_MS
                return out
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.accounts, args.runs))))


if __name__ == "__main__":
    main()
