"""Helpers for tests that run the relay's IMAP listeners against a real Dovecot."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from relay.api.keys import STORE
from relay.config import ImapSettings, Settings
from relay.imap import ImapClient
from relay.store.schema import accounts, events, imap_folders
from tests.api.helpers import call
from tests.peers.dovecot import DovecotServer

from .support import Account, new_account

# The user of the Dovecots started with fewer capabilities (see conftest.py).
PLAIN = Account("plain@example.com", "pw-plain", "t")
# What those Dovecots advertise at least: no CONDSTORE, QRESYNC, IDLE nor LIST-STATUS.
BASIC_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT LITERAL+ UIDPLUS MOVE SPECIAL-USE"
    " NAMESPACE UNSELECT CHILDREN"
)

# Short timeouts and backoffs so that failures and recoveries take a fraction of a second.
FAST = ImapSettings(
    watch=True,
    idle_restart=30.0,
    done_timeout=2.0,
    command_timeout=5.0,
    connect_timeout=2.0,
    reconnect_min=0.05,
    reconnect_max=0.5,
    auth_retry=60.0,
    scan_interval=0.25,
    lease=5.0,
    poll_interval=1.0,
)
# Dovecot batches change notifications for ~0.5 s; this leaves room for a slow machine.
WAIT = 15.0


def relay_settings(settings: Settings, **imap: Any) -> Settings:
    """``settings`` with the listeners on, fast timeouts, and ``imap`` overrides."""
    return dataclasses.replace(settings, imap=dataclasses.replace(FAST, **imap))


async def fresh_account(server: DovecotServer) -> Account:
    """A fresh test user (granting writes the grants file: not on the event loop)."""
    return await asyncio.to_thread(new_account, server)


async def start_relay(make_client: Any, settings: Settings, **imap: Any) -> TestClient:
    """A relay with the listeners on (see :func:`relay_settings`)."""
    client: TestClient = await make_client(relay_settings(settings, **imap))
    return client


def password_account(
    account_id: str, user: Account, port: int, *, host: str = "127.0.0.1", **extra: Any
) -> dict[str, Any]:
    """An EmailEngine account payload that logs in with LOGIN over plain IMAP."""
    return {
        "account": account_id,
        "name": account_id,
        "email": user.user,
        "imap": {
            "host": host,
            "port": port,
            "secure": False,
            "auth": {"user": user.user, "pass": user.password},
        },
        **extra,
    }


async def add_account(client: TestClient, payload: dict[str, Any]) -> None:
    """POST /v1/account."""
    await call(client, "POST", "/v1/account", payload)


async def stored_events(
    client: TestClient, account: str, kind: str | None = None
) -> list[dict[str, Any]]:
    """The stored envelopes of ``account`` (of one event type), oldest first."""
    query = select(events.c.payload).where(events.c.account == account).order_by(events.c.seq)
    if kind is not None:
        query = query.where(events.c.event == kind)
    async with client.app[STORE].read() as conn:
        rows = (await conn.execute(query)).scalars().all()
    return [json.loads(r) for r in rows]


async def wait_until(check: Callable[[], Awaitable[Any]], what: str, within: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def wait_events(
    client: TestClient, account: str, kind: str, count: int = 1, within: float = WAIT
) -> list[dict[str, Any]]:
    """Wait until ``account`` has at least ``count`` events of ``kind``; return them all."""

    async def check() -> list[dict[str, Any]] | None:
        found = await stored_events(client, account, kind)
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = await wait_until(
        check, f"{count} {kind} event(s) of {account}", within
    )
    return result


async def account_row(client: TestClient, account: str) -> Any:
    """The stored account row."""
    async with client.app[STORE].read() as conn:
        return (await conn.execute(select(accounts).where(accounts.c.id == account))).first()


async def wait_state(client: TestClient, account: str, *states: str, within: float = WAIT) -> str:
    """Wait until the account's state is one of ``states``; return it."""

    async def check() -> str | None:
        row = await account_row(client, account)
        return str(row.state) if row is not None and row.state in states else None

    result: str = await wait_until(check, f"{account} in state {states}", within)
    return result


async def folder_row(client: TestClient, account: str, path: str = "INBOX") -> Any:
    """The stored ``imap_folders`` row."""
    async with client.app[STORE].read() as conn:
        return (
            await conn.execute(
                select(imap_folders).where(
                    imap_folders.c.account == account, imap_folders.c.path == path
                )
            )
        ).first()


async def settle() -> None:
    """Give the listeners time to report anything they might still report (duplicates)."""
    await asyncio.sleep(0.8)


async def mailbox(server: DovecotServer, user: Account, folder: str = "INBOX") -> ImapClient:
    """A second, independent IMAP connection (the "other mail client") with ``folder`` selected."""
    client = await ImapClient.connect(server.host, server.port)
    await client.login(user.user, user.password)
    await client.select(folder)
    return client


def subjects(found: list[dict[str, Any]]) -> list[str]:
    """The subjects of messageNew envelopes."""
    return [e["data"].get("subject", "") for e in found]


def _deliver(server: DovecotServer, user: str, message: bytes) -> None:
    local, _, domain = user.partition("@")
    maildir = server.root / "mail" / domain / local / "Maildir"
    for directory in (
        maildir.parent.parent,
        maildir.parent,
        maildir,
        *(maildir / s for s in ("new", "cur", "tmp")),
    ):
        if not directory.exists():
            directory.mkdir()
            os.chown(directory, 65534, 65534)
    name = f"{time.time_ns()}.relaytest.{os.getpid()}"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(message)
    os.chown(tmp, 65534, 65534)
    tmp.rename(maildir / "new" / name)


async def deliver_offline(server: DovecotServer, user: Account, message: bytes) -> None:
    """Deliver into the Maildir directly: works while Dovecot is stopped."""
    await asyncio.to_thread(_deliver, server, user.user, message)


def write_ca(server: DovecotServer, path: Path) -> str:
    """Write the CA that signed the server's TLS certificate; return the file name."""
    ca = server._ca
    assert ca is not None
    ca.cert_pem.write_to_path(str(path))  # type: ignore[attr-defined]
    return str(path)
