"""Supervisors (nodes) started in-process on one store, and accounts whose server refuses
connections (their listeners start and wait)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from relay.auth.crypto import Cipher, derive_key
from relay.config import ImapSettings, StoreSettings
from relay.sources.supervisor import Supervisor
from relay.store import Store
from relay.store import accounts as accounts_store
from relay.store.migrate import migrate
from relay.store.schema import AccountState
from tests.proc import free_port

# Full scans never come during a test: only what the test calls, and notify() passes, run.
QUIET = ImapSettings(
    scan_interval=600.0, lease=1200.0, reconnect_min=60.0, reconnect_max=60.0, auth_retry=60.0
)

StartNode = Callable[[str], Awaitable[Supervisor]]


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    yield store
    await store.close()


@pytest.fixture
async def supervisors(store: Store) -> AsyncIterator[StartNode]:
    """Start a supervisor (one node) on ``store``; those still running stop at the end."""
    started: list[Supervisor] = []
    cipher = Cipher(derive_key("test-secret-for-credentials"))

    async def start(node: str) -> Supervisor:
        supervisor = Supervisor(
            store, cipher, QUIET, service_url="https://relay.example.com", node=node
        )
        await supervisor.start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        if supervisor.running:
            await supervisor.stop(5)


async def add(store: Store, account: str, *, delegated_to: str | None = None) -> None:
    """An IMAP account whose server refuses connections (its listener starts and waits)."""
    async with store.write() as conn:
        await accounts_store.insert(
            conn,
            {
                "id": account,
                "name": account,
                "email": f"{account}@example.com",
                "backend": "imap",
                "state": AccountState.INIT,
                "delegated_account": delegated_to,
                "config": {
                    "imap": {
                        "host": "127.0.0.1",
                        "port": free_port(),
                        "secure": False,
                        "auth": {"user": account, "accessToken": "token"},
                    }
                },
            },
        )
