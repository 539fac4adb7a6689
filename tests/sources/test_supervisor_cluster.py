"""Several supervisors (nodes) on one store: the accounts are split by the assignment, move
when a node joins or leaves, and a node that lost an account can no longer write for it."""

from __future__ import annotations

import asyncio

from sqlalchemy import select, update

from relay.errors import LeaseLost
from relay.events.model import Event
from relay.sources.assignment import assign
from relay.sources.imap.sink import FolderRef, FolderSink, NewMessage
from relay.sources.imap.state import FolderState
from relay.sources.supervisor import Supervisor
from relay.store import Store
from relay.store import events as events_store
from relay.store import folders as folders_store
from relay.store import nodes as nodes_store
from relay.store.engine import now_ms
from relay.store.leases import Lease
from relay.store.schema import account_leases, events
from tests.sources.conftest import StartNode, add

ACCOUNTS = [f"acct-{i:02d}" for i in range(24)]


async def holders(store: Store) -> dict[str, str]:
    async with store.read() as conn:
        rows = await conn.execute(select(account_leases.c.account, account_leases.c.node))
        return {str(a): str(n) for a, n in rows.all() if n}


async def settle(*supervisors: Supervisor) -> None:
    """Two rounds of scans: the first hands over, the second takes what was released."""
    for _ in range(2):
        for s in supervisors:
            await s.scan()


async def test_accounts_split_and_move_when_nodes_join_and_leave(
    store: Store, supervisors: StartNode
) -> None:
    """One node takes every account; a second one joins and each ends with exactly its
    rendezvous share (those that moved under a new epoch); when one stops, the other takes
    everything back."""
    for account in ACCOUNTS:
        await add(store, account)
    first = await supervisors("node-a")
    assert set(first.watchers) == set(ACCOUNTS)
    second = await supervisors("node-b")
    await settle(first, second)
    owners = assign(ACCOUNTS, ["node-a", "node-b"])
    for s in (first, second):
        assert set(s.watchers) == {a for a, n in owners.items() if n == s.node}
    assert await holders(store) == owners
    moved = [a for a, n in owners.items() if n == "node-b"]
    assert moved
    assert all(second.watchers[a].lease == Lease("node-b", 2) for a in moved)

    await second.stop(5)
    async with store.read() as conn:
        assert await nodes_store.live(conn, now_ms=now_ms(), lease_ms=1_200_000) == ["node-a"]
    await first.scan()
    assert set(first.watchers) == set(ACCOUNTS)
    assert set((await holders(store)).values()) == {"node-a"}


async def test_a_node_that_lost_its_lease_stops_the_account(
    store: Store, supervisors: StartNode
) -> None:
    """When another node took an account over (a higher epoch), the old owner's next scan
    stops its watcher instead of renewing."""
    await add(store, "one")
    node = await supervisors("node-a")
    assert node.watchers["one"].lease == Lease("node-a", 1)
    async with store.write() as conn:
        await conn.execute(
            update(account_leases)
            .where(account_leases.c.account == "one")
            .values(node="node-b", epoch=2, expires_ms=now_ms() + 600_000)
        )
    await node.scan()
    assert "one" not in node.watchers
    assert await holders(store) == {"one": "node-b"}


async def test_a_fenced_commit_writes_nothing_and_fails_only_its_own_caller(
    store: Store,
) -> None:
    """A listener commit under a lease that moved on raises LeaseLost and stores neither
    its events nor its folder state; a commit under the current lease in the same group
    goes through."""
    await add(store, "old")
    await add(store, "new")
    async with store.write() as conn:
        for account in ("old", "new"):
            await folders_store.ensure(conn, account, "INBOX", "\\Inbox")
        await conn.execute(
            account_leases.insert(),
            [
                {"account": "old", "node": "node-b", "expires_ms": now_ms() + 60_000, "epoch": 2},
                {"account": "new", "node": "node-a", "expires_ms": now_ms() + 60_000, "epoch": 1},
            ],
        )
        rows = {a: await folders_store.get(conn, a, "INBOX") for a in ("old", "new")}
    states = {a: FolderState.from_row(row) for a, row in rows.items() if row is not None}
    sink = FolderSink(store, service_url="https://relay.example.com", max_payload_bytes=65536)
    change = NewMessage({"UID": 7, "FLAGS": (), "RFC822.SIZE": 10, "ENVELOPE": None})

    async def commit(account: str, lease: Lease) -> int:
        state = states[account]
        state.uidvalidity, state.uidnext = 1, 8
        ref = FolderRef(account, "INBOX", "\\Inbox", lease)
        return await sink.commit(ref, state, [change])

    try:
        results = await asyncio.gather(
            commit("old", Lease("node-a", 1)),
            commit("new", Lease("node-a", 1)),
            return_exceptions=True,
        )
    finally:
        await sink.close()
    assert isinstance(results[0], LeaseLost)
    assert results[1] == 1
    async with store.read() as conn:
        stored = (await conn.execute(select(events.c.account))).scalars().all()
        versions = {
            a: row["version"]
            for a in rows
            if (row := await folders_store.get(conn, a, "INBOX")) is not None
        }
    assert stored == ["new"]
    assert versions == {"old": 0, "new": 1}


async def test_a_failed_last_flush_still_gives_the_leases_back(
    store: Store, supervisors: StartNode
) -> None:
    """When the last write of a shutdown fails (here: an event whose id is taken), the node
    still releases its leases and leaves, so the others take over at once."""
    await add(store, "one")
    node = await supervisors("node-a")
    assert "one" in node.watchers
    taken = Event("connectError", "one", {}, now_ms())
    async with store.write() as conn:
        await events_store.record(conn, [taken], default_service_url="https://relay.example.com")
    node._pending_events.append(taken)
    await node.stop(5)
    assert await holders(store) == {}
    async with store.read() as conn:
        assert await nodes_store.rows(conn) == []
