"""Scale out with Graph: three relay nodes share 20 sandbox Graph accounts.

Graph calls one URL for every subscription, whichever node made it: here a round-robin
balancer in front of the nodes (``serviceUrl``), so a change notification lands on any node,
mostly on one that does not watch the account it names.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.sandbox.browser import sign_in
from relay.sandbox.server import RunningSandbox
from relay.sources.assignment import assign
from tests.peers.receiver import Receiver
from tests.sandbox.graph_helpers import admin, deliver

from .conftest import WAIT, Cluster, account_id, add_route, assert_exactly_once
from .support import Balancer, Forwarded, Pusher, notified_subscriptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

NODES = ["node-1", "node-2", "node-3"]
USERS = [f"g{n}@example.com" for n in range(20)]
ACCOUNTS = [account_id(u) for u in USERS]
PASSWORD = "graph-user-password"
RATE = 5.0


@pytest.fixture
async def balancer() -> AsyncIterator[Balancer]:
    """The round-robin balancer (backends are added as nodes start)."""
    lb = Balancer()
    await lb.start()
    try:
        yield lb
    finally:
        await lb.stop()


async def add_graph_accounts(
    cluster: Cluster, browser: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A sandbox user per account, then the consent flow for each (as that user), through
    node-1: Graph accounts (the application's ``baseScopes`` is ``api``)."""
    seed = sandbox.seed
    assert seed is not None
    app = await cluster.api(
        "POST",
        "/v1/oauth2",
        {
            "name": "Sandbox",
            "provider": "outlook",
            "clientId": seed.client_id,
            "clientSecret": seed.client_secret,
            "authority": seed.tenant_id,
            "redirectUrl": seed.redirect_uri,
            "baseScopes": "api",
        },
        via="node-1",
    )
    limit = asyncio.Semaphore(4)

    async def one(user: str) -> None:
        async with limit:
            await admin(browser, sandbox, "POST", "users", {"email": user, "password": PASSWORD})
            form = {
                "account": account_id(user),
                "name": user,
                "type": app["id"],
                "redirectUrl": "https://app.example/",
            }
            link = (await cluster.api("POST", "/v1/authentication/form", form, via="node-1"))["url"]
            async with browser.get(
                link, allow_redirects=False, headers={"Accept": "text/html"}
            ) as resp:
                assert resp.status == 302, await resp.text()
                authorize = resp.headers["Location"]
            answer = await sign_in(browser, authorize, user, PASSWORD)
            node = cluster.nodes["node-1"]
            async with cluster.http.post(
                node.url + "/oauth", data=answer, allow_redirects=False
            ) as resp:
                assert resp.status == 302, await resp.text()

    await asyncio.gather(*(one(u) for u in USERS))


async def sandbox_subscriptions(
    browser: aiohttp.ClientSession, sandbox: RunningSandbox
) -> dict[str, set[str]]:
    """The sandbox's active subscriptions: mailbox -> subscription ids."""
    found: dict[str, set[str]] = defaultdict(set)
    for sub in await admin(browser, sandbox, "GET", "subscriptions"):
        found[str(sub["mailbox"]).lower()].add(str(sub["id"]))
    return dict(found)


async def wait_subscribed(
    cluster: Cluster, browser: aiohttp.ClientSession, sandbox: RunningSandbox
) -> dict[str, set[str]]:
    """Wait until every account is connected with a subscription for each folder it
    watches, and the sandbox has exactly those; return the sandbox's, by mailbox."""
    last: dict[str, Any] = {}

    async def check() -> dict[str, set[str]] | None:
        subs = await sandbox_subscriptions(browser, sandbox)
        for user in USERS:
            view = await cluster.api("GET", f"/v1/account/{account_id(user)}")
            graph = view.get("graph") or {}
            ids = {f.get("subscriptionId") for f in graph.get("folders") or []}
            last[user] = (view.get("state"), graph.get("mode"), sorted(map(str, ids)))
            if view.get("state") != "connected" or graph.get("mode") != "subscription":
                return None
            if not ids or None in ids or ids != subs.get(user):
                return None
        return subs

    try:
        result: dict[str, set[str]] = await cluster.wait_for(
            check, "every Graph account connected and subscribed", WAIT * 1.5
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen (state, mode, subscriptions): {last}") from None
    return result


def non_owner_hits(
    forwarded: list[Forwarded], owner_of_sub: dict[str, str], owners: dict[str, str]
) -> int:
    """Notifications that reached a node other than the one watching their account."""
    hits = 0
    for request in forwarded:
        for sub in notified_subscriptions(request):
            account = owner_of_sub.get(sub)
            if account is not None and owners.get(account) not in (None, request.backend):
                hits += 1
    return hits


@pytest.mark.timeout(600)
async def test_graph_subscriptions_survive_kill_9_and_notifications_reach_the_owner(
    cluster: Cluster,
    receiver: Receiver,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
    balancer: Balancer,
) -> None:
    """Twenty Graph accounts spread over three nodes; the owner of some is killed (kill -9)
    and the survivors take them over keeping their subscriptions (the same ids at Graph,
    none re-created); notifications, which mostly hit a node that does not watch the
    account, each lead to one report: every message is reported exactly once."""
    await admin(http, sandbox, "POST", "settings", {"allowHttpNotifications": True})
    cluster.env.update(
        {
            "RELAY_MICROSOFT_GRAPH_URL": sandbox.url,
            "RELAY_MICROSOFT_AUTHORITY_HOST": sandbox.url,
            "RELAY_MICROSOFT_CA_BUNDLE": str(sandbox.ca_path),
            # Mail after the first catch-up is seen through notifications only.
            "RELAY_GRAPH_POLL_INTERVAL": "600",
            "RELAY_GRAPH_RETRY_MIN": "0.2",
        }
    )
    # node-1 first: a fresh store (see test_nodes_started_together_on_a_fresh_store_come_up).
    await cluster.start(NODES[0])
    await cluster.start(*NODES[1:])
    balancer.backends.update({n: cluster.nodes[n].url for n in NODES})
    await cluster.api("POST", "/v1/settings", {"serviceUrl": balancer.url})
    await add_route(cluster, receiver)
    await add_graph_accounts(cluster, http, sandbox)
    await cluster.wait_spread(ACCOUNTS, NODES)
    before = await wait_subscribed(cluster, http, sandbox)

    async def append(user: str, subject: str) -> None:
        await deliver(http, sandbox, user, subject=subject)

    pusher = Pusher(append, USERS, tag="graph", rate=RATE)
    pusher.start()
    try:
        expected = assign(ACCOUNTS, NODES)
        victim = Counter(expected.values()).most_common(1)[0][0]
        lost = sorted(a for a, n in expected.items() if n == victim)
        await cluster.kill(victim)
        killed_at = len(balancer.forwarded)
        # Mail for its accounts while nobody watches them, and after they were taken.
        await pusher.push_to([f"{a}@example.com" for a in lost])
        survivors = [n for n in NODES if n != victim]
        await cluster.wait_spread(ACCOUNTS, survivors)
        for _ in range(3):
            await pusher.push_to([f"{a}@example.com" for a in lost])
        await assert_exactly_once(cluster, receiver, pusher)
    finally:
        await pusher.close()

    after = await sandbox_subscriptions(http, sandbox)
    changed = {
        u: f"{len(before.get(u, ()))} before, {len(after.get(u, ()))} after, "
        f"{len(before.get(u, set()) & after.get(u, set()))} kept"
        for u in USERS
        if before.get(u) != after.get(u)
    }
    moved = [f"{a}@example.com" for a in lost]
    assert not changed, (
        f"subscriptions of {len(changed)} mailboxes re-created or lost ({victim} watched "
        f"{moved} before it was killed): {changed}"
    )
    subs = {s: u for u, ids in after.items() for s in ids}
    owner_of_sub = {s: account_id(u) for s, u in subs.items()}
    hits = non_owner_hits(balancer.forwarded[killed_at:], owner_of_sub, assign(ACCOUNTS, survivors))
    notified = sum(len(notified_subscriptions(f)) for f in balancer.forwarded[killed_at:])
    assert hits > 0, (
        f"no notification after the kill reached a non-owner node ({notified} notifications"
        f" forwarded): the scenario was not exercised"
    )
