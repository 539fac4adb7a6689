"""A Graph account while the relay's PostgreSQL crashes and comes back."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest
import structlog

from relay.sandbox.server import RunningSandbox
from tests.api.helpers import call
from tests.auth.conftest import MAIN, SHARED, SHARED_PAYLOAD
from tests.faults.conftest import private_pg  # noqa: F401 (a fixture used here)
from tests.peers.postgres import PrivatePostgres
from tests.peers.receiver import Receiver
from tests.sandbox.graph_helpers import deliver
from tests.sources.graph.test_graph_backend import (  # noqa: F401 (start is a fixture)
    Start,
    _graph_main,
    _graph_state,
    _route,
    start,
)
from tests.sources.imap.relay_support import wait_state


@pytest.fixture
def store_url(private_pg: PrivatePostgres) -> str:  # noqa: F811
    """The relay's store is the PostgreSQL this test crashes."""
    return private_pg.url


def _subjects(rx: Receiver) -> Counter[str]:
    return Counter(
        d.json()["data"]["subject"] for d in rx.accepted() if d.json()["event"] == "messageNew"
    )


async def _wait_subjects(rx: Receiver, wanted: set[str], within: float) -> None:
    async with asyncio.timeout(within):
        while not wanted <= set(_subjects(rx)):
            await rx.wait_for(rx.accepted_count + 1, timeout=None)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("watched", ["subscription", "polling"])
async def test_graph_account_survives_a_database_crash(
    start: Start,  # noqa: F811
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    private_pg: PrivatePostgres,  # noqa: F811
    watched: str,
) -> None:
    """Messages delivered while the database is down are reported once when it is back; the
    account is not failed, nor set up again, and keeps its subscription (a database outage
    is not a Graph outage). The shared mailbox is watched by delta polling, whose catch-ups
    run into the outage."""
    client = await start()
    async with Receiver(secret="whsec_" + "A" * 44) as rx:
        await _route(client, rx)
        await _graph_main(client, http, sandbox)
        account, mailbox = "my-account", MAIN
        if watched == "polling":
            await call(client, "POST", "/v1/account", SHARED_PAYLOAD)
            account, mailbox = "shared", SHARED
        await wait_state(client, account, "connected")
        assert (await _graph_state(client, account))["mode"] == watched
        subscription = (await _graph_state(client, account))["subscription_id"]
        await deliver(http, sandbox, mailbox=mailbox, subject="before")
        await _wait_subjects(rx, {"before"}, 60)

        with structlog.testing.capture_logs() as logs:
            await asyncio.to_thread(private_pg.crash)
            during = {f"during {n}" for n in range(3)}
            for subject in sorted(during):
                await deliver(http, sandbox, mailbox=mailbox, subject=subject)
                await asyncio.sleep(0.5)
            await asyncio.sleep(5)
            await asyncio.to_thread(private_pg.start)
            await _wait_subjects(rx, during, 90)
        # The watcher waited for the store: it did not fail the account, nor set it up again.
        said = Counter(entry["event"] for entry in logs)
        assert said["graph account failed"] == 0, said
        assert said["subscription created"] == 0, said
        assert said["store unavailable; writes are retried"] == 1, said
        await deliver(http, sandbox, mailbox=mailbox, subject="after")
        await _wait_subjects(rx, {"after"}, 60)
        await asyncio.sleep(1.0)  # a repeat would show by now
        assert (await _graph_state(client, account))["subscription_id"] == subscription
        states = [
            d.json()["event"]
            for d in rx.accepted()
            if d.json()["event"] in ("connectError", "authenticationError")
        ]
        assert states == []
    assert _subjects(rx) == {"before": 1, "after": 1} | dict.fromkeys(during, 1)
