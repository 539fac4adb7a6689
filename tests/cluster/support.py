"""Peers and checks for the cluster tests.

- :class:`ClusterDovecot`: the test Dovecot for hundreds of mailboxes (one ``imap`` process
  per connection, one system uid per mailbox; see its docstring for why);
- :class:`Pusher`: appends messages with unique subjects to random mailboxes, at a steady
  rate, in the background (IMAP APPEND, or any other ``append`` function);
- :class:`Balancer`: an HTTP round-robin proxy in front of the nodes (the URL Graph calls);
- :func:`imap_connections`: the IMAP connections a relay process holds, from ``/proc``;
- :func:`reported`: what the receiver got, by subject and ``webhook-id``, and what is
  missing or was reported twice;
- PostgreSQL: a fresh database per test, and reads of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from relay.imap import ClientOptions, ImapClient
from tests.conftest import PG_ADMIN
from tests.peers.dovecot_scale import ScaleDovecot
from tests.peers.receiver import Receiver

# -- Dovecot --------------------------------------------------------------------------------

# First system uid of the mailboxes (one each). bench/imap_scale.py starts at 200_000; the two
# never share a server, and the kernel counts inotify instances per uid whichever server.
UID_BASE = 230_000


@dataclass
class ClusterDovecot(ScaleDovecot):
    """The many-mailbox Dovecot (:class:`tests.peers.dovecot_scale.ScaleDovecot`) with uids of
    its own."""

    uid_base: int = UID_BASE


def message(subject: str) -> bytes:
    """A small RFC 5322 message with ``subject`` (and a Message-ID made of it)."""
    token = subject.replace(" ", ".")
    return (
        f"From: Sender <sender@example.org>\r\nTo: r@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{token}@cluster.test>\r\n\r\nbody of {subject}\r\n"
    ).encode()


_IMAP_OPTIONS = ClientOptions(connect_timeout=30.0, command_timeout=30.0, done_timeout=10.0)


def imap_append(host: str, port: int, password: str) -> Callable[[str, str], Awaitable[None]]:
    """An ``append(user, subject)`` that logs in as ``user`` and APPENDs to INBOX."""

    async def append(user: str, subject: str) -> None:
        client = await ImapClient.connect(host, port, options=_IMAP_OPTIONS)
        try:
            await client.login(user, password)
            await client.append("INBOX", message(subject))
            with contextlib.suppress(Exception):
                await client.logout()
        finally:
            client.close()

    return append


# -- mail arriving ---------------------------------------------------------------------------


class Pusher:
    """Appends messages with unique subjects (``"{tag} {n} {user}"``) to random mailboxes.

    :meth:`start` pushes ``rate`` messages a second in the background until :meth:`stop`;
    :meth:`push_to` pushes one to each of some mailboxes now. ``sent`` holds the subjects
    whose append succeeded (each must be reported), ``uncertain`` those whose append failed
    half-way (the message may or may not be there: never required, still checked for
    duplicates).
    """

    def __init__(
        self,
        append: Callable[[str, str], Awaitable[None]],
        users: Sequence[str],
        *,
        tag: str,
        rate: float,
        concurrency: int = 8,
        seed: int = 7,
    ) -> None:
        self.append = append
        self.users = list(users)
        self.tag = tag
        self.rate = rate
        self.sent: dict[str, str] = {}
        self.uncertain: dict[str, str] = {}
        self.errors: list[str] = []
        self._count = itertools.count()
        self._random = random.Random(seed)
        self._limit = asyncio.Semaphore(concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[str]] = set()

    async def push(self, user: str) -> str:
        """Append one message to ``user``'s INBOX; its subject."""
        subject = f"{self.tag} {next(self._count)} {user}"
        async with self._limit:
            try:
                await self.append(user, subject)
            except Exception as exc:
                self.uncertain[subject] = user
                self.errors.append(f"{subject}: {exc!r}")
            else:
                self.sent[subject] = user
        return subject

    async def push_to(self, users: Sequence[str]) -> list[str]:
        """One message to each of ``users``, concurrently; their subjects."""
        return list(await asyncio.gather(*(self.push(u) for u in users)))

    def start(self) -> None:
        """Push ``rate`` messages a second to random mailboxes until :meth:`stop`."""
        self._loop_task = asyncio.create_task(self._run(), name="cluster pusher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for i in itertools.count():
            delay = begin + i / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.push(self._random.choice(self.users)))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def stop(self) -> None:
        """Stop pushing; wait for the appends under way."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def close(self) -> None:
        """Stop at once (teardown): cancel the appends under way too."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._inflight):
            task.cancel()
        pending = [t for t in (self._loop_task, *self._inflight) if t is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        self._loop_task = None

    def all_subjects(self) -> dict[str, str]:
        """Every subject pushed (sent or uncertain) -> its user."""
        return {**self.sent, **self.uncertain}


# -- what arrived ----------------------------------------------------------------------------


@dataclass
class Reported:
    """The receiver's ``messageNew`` deliveries of one pusher's messages, by subject."""

    ids: dict[str, set[str]]  # subject -> webhook-ids it arrived under
    missing: dict[str, str]  # subject -> user: pushed, never arrived
    duplicated: dict[str, set[str]]  # subject -> more than one webhook-id
    unverified: int  # requests whose signature did not verify
    other: int = 0  # messageNew deliveries of other subjects (mail from earlier tests)
    retried: int = 0  # deliveries of a webhook-id already accepted (a retry: allowed)

    def problems(self) -> list[str]:
        """Human-readable findings; empty when every message arrived exactly once."""
        out = []
        if self.unverified:
            out.append(f"{self.unverified} deliveries failed signature verification")
        if self.missing:
            sample = dict(sorted(self.missing.items())[:15])
            out.append(f"{len(self.missing)} messages never reported, e.g. {sample}")
        if self.duplicated:
            sample2 = {s: sorted(i) for s, i in sorted(self.duplicated.items())[:10]}
            out.append(
                f"{len(self.duplicated)} messages reported under several webhook-ids, "
                f"e.g. {sample2}"
            )
        return out


def reported(rx: Receiver, pusher: Pusher) -> Reported:
    """Group ``rx``'s accepted ``messageNew`` deliveries by subject and ``webhook-id``."""
    ids: dict[str, set[str]] = defaultdict(set)
    other = 0
    seen: set[str] = set()
    retried = 0
    prefix = pusher.tag + " "
    for delivery in rx.accepted():
        body = delivery.json()
        if body.get("event") != "messageNew":
            continue
        subject = str((body.get("data") or {}).get("subject") or "")
        if not subject.startswith(prefix):
            other += 1
            continue
        assert delivery.id is not None
        if delivery.id in seen:
            retried += 1
        seen.add(delivery.id)
        ids[subject].add(delivery.id)
    missing = {s: u for s, u in pusher.sent.items() if s not in ids}
    duplicated = {s: i for s, i in ids.items() if len(i) > 1}
    return Reported(
        ids=dict(ids),
        missing=missing,
        duplicated=duplicated,
        unverified=rx.received - rx.verified_count,
        other=other,
        retried=retried,
    )


async def wait_reported(rx: Receiver, pusher: Pusher, within: float) -> Reported:
    """Wait (at most ``within`` s) until every message ``pusher`` sent was reported."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = reported(rx, pusher)
        left = deadline - loop.time()
        if not found.missing or left <= 0:
            return found
        with contextlib.suppress(TimeoutError):
            await rx.wait_for(rx.accepted_count + 1, timeout=min(left, 1.0))


# -- the relay's sockets ---------------------------------------------------------------------


def imap_connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` (IPv4), read from /proc."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        # State 01: ESTABLISHED.
        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
            count += 1
    return count


# -- a load balancer -------------------------------------------------------------------------


@dataclass
class Forwarded:
    """One request the balancer passed on."""

    backend: str
    method: str
    path: str
    body: bytes
    status: int


_HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
}


@dataclass
class Balancer:
    """An HTTP proxy on a free port of 127.0.0.1 in front of the nodes.

    Each request goes to the next backend in turn; one that refuses the connection or
    drops it (a killed node) is skipped and the request goes to the next. ``forwarded``
    records who got what.
    """

    backends: dict[str, str] = field(default_factory=dict)  # name -> base URL
    forwarded: list[Forwarded] = field(default_factory=list)
    port: int = 0
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        names = list(self.backends)
        for _ in names:
            name = names[next(self._turn) % len(names)]
            try:
                async with self._session.request(
                    request.method,
                    self.backends[name] + request.path_qs,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
                    kept = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
            except (aiohttp.ClientConnectionError, TimeoutError):
                continue
            self.forwarded.append(Forwarded(name, request.method, request.path, body, status))
            return web.Response(status=status, body=payload, headers=kept)
        return web.Response(status=502, text="no backend answered")


def notified_subscriptions(forwarded: Forwarded) -> list[str]:
    """The subscription ids named by a ``/graph/notify`` request."""
    if forwarded.path != "/graph/notify" or not forwarded.body:
        return []
    try:
        items = json.loads(forwarded.body).get("value") or []
    except (ValueError, AttributeError):
        return []
    return [str(i.get("subscriptionId")) for i in items if isinstance(i, dict)]


# -- PostgreSQL ------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return url.replace("postgresql://", "postgres://", 1)


async def create_database() -> str:
    """A new, empty database on the test server; its ``postgresql://`` URL."""
    name = f"relay_cluster_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(_dsn(PG_ADMIN))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


async def drop_database(url: str) -> None:
    """Drop the database of ``url`` (closing whatever is still connected to it)."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(_dsn(PG_ADMIN))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one read on the database of ``url``; [] when the table is not there (yet)."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()
