"""The supervisor's passes between full scans: notify(account) looks at that account (and
the watchers that borrow from it) only; leases stay one node's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import select

from relay.store import Store
from relay.store import accounts as accounts_store
from relay.store.schema import account_leases
from tests.sources.conftest import StartNode, add


async def touch(store: Store, account: str) -> None:
    """Change an account's settings (``updated_ms``), as an API update does."""
    async with store.write() as conn:
        await accounts_store.update(conn, account, {"name": f"{account} renamed"})


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (the supervisor's passes run in its own tasks) until it holds."""
    try:
        async with asyncio.timeout(10):
            while True:
                if check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def leases(store: Store) -> dict[str, str]:
    async with store.read() as conn:
        rows = await conn.execute(select(account_leases.c.account, account_leases.c.node))
        return {str(a): str(n) for a, n in rows.all()}


async def test_notify_starts_and_stops_the_named_account_only(
    store: Store, supervisors: StartNode
) -> None:
    """notify(account) starts (and, once deleted, stops) that account's listeners and holds
    its lease; an account added without a notify waits for a full scan (notify())."""
    supervisor = await supervisors("node-a")
    await add(store, "one")
    await add(store, "unannounced")
    supervisor.notify("one")
    await until(lambda: "one" in supervisor.watchers, "one started")
    assert "unannounced" not in supervisor.watchers
    assert await leases(store) == {"one": "node-a"}
    supervisor.notify()
    await until(lambda: "unannounced" in supervisor.watchers, "full scan ran")
    async with store.write() as conn:
        await accounts_store.delete(conn, "one")
    supervisor.notify("one")
    await until(lambda: "one" not in supervisor.watchers, "one stopped")
    assert await leases(store) == {"unannounced": "node-a"}


async def test_change_restarts_the_watchers_that_borrow_from_it(
    store: Store, supervisors: StartNode
) -> None:
    """A change to an account named by notify() restarts the listeners of the accounts that
    delegate to it (their settings stamp includes it), and leaves others running."""
    supervisor = await supervisors("node-a")
    await add(store, "main")
    await add(store, "shared", delegated_to="main")
    await add(store, "other")
    for account in ("main", "shared", "other"):
        supervisor.notify(account)
    await until(lambda: len(supervisor.watchers) == 3, "all started")
    before = dict(supervisor.watchers)
    await touch(store, "main")
    supervisor.notify("main")
    await until(lambda: supervisor.watchers.get("main") is not before["main"], "main restarted")
    await until(lambda: supervisor.watchers.get("shared") is not before["shared"], "shared too")
    assert supervisor.watchers["other"] is before["other"]


async def test_a_node_does_not_take_an_account_another_node_holds(
    store: Store, supervisors: StartNode
) -> None:
    """notify() on a second node leaves an account whose lease the first node holds alone."""
    first = await supervisors("node-a")
    second = await supervisors("node-b")
    await add(store, "one")
    first.notify("one")
    await until(lambda: "one" in first.watchers, "one started on node-a")
    second.notify("one")
    await second.scan_changed()  # the pass (or waits for the one already running)
    assert "one" not in second.watchers
    assert await leases(store) == {"one": "node-a"}
