"""Account leases: taking, renewing and releasing them, their epochs, and fencing by epoch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from relay.config import StoreSettings
from relay.errors import LeaseLost
from relay.store import accounts as accounts_store
from relay.store import leases
from relay.store.engine import Store
from relay.store.leases import Lease
from relay.store.migrate import migrate
from relay.store.schema import account_leases

LEASE = 10_000


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    await accounts(store, "a", "b", "c")
    yield store
    await store.close()


async def accounts(store: Store, *names: str) -> None:
    async with store.write() as conn:
        for name in names:
            await accounts_store.insert(
                conn,
                {
                    "id": name,
                    "name": name,
                    "email": f"{name}@example.com",
                    "backend": "imap",
                    "state": "init",
                    "config": {},
                },
            )


async def rows(store: Store) -> dict[str, tuple[str, int]]:
    """account -> (node, epoch) of every lease row."""
    async with store.read() as conn:
        result = await conn.execute(
            select(account_leases.c.account, account_leases.c.node, account_leases.c.epoch)
        )
        return {str(a): (str(n), int(e)) for a, n, e in result.all()}


async def claim(store: Store, node: str, accounts: list[str], now: int) -> dict[str, int]:
    async with store.write() as conn:
        return await leases.claim(conn, node, accounts, now_ms=now, lease_ms=LEASE)


async def test_each_new_owner_raises_the_epoch(store: Store) -> None:
    """A free lease is taken at epoch 1; renewing keeps the epoch; a lease taken over after
    it ran out, or after its node released it, gets the next epoch."""
    assert await claim(store, "n1", ["a", "b"], 1_000) == {"a": 1, "b": 1}
    # n2 wants a too, but n1's lease runs until 11,000.
    assert await claim(store, "n2", ["a"], 2_000) == {}
    assert await claim(store, "n1", ["a", "b"], 5_000) == {"a": 1, "b": 1}
    # n1 stopped beating: its lease of a ran out at 15,000.
    assert await claim(store, "n2", ["a"], 15_001) == {"a": 2}
    assert await rows(store) == {"a": ("n2", 2), "b": ("n1", 1)}
    async with store.write() as conn:
        await leases.release(conn, "n1", ["b"])
    assert (await rows(store))["b"] == ("", 1)
    assert await claim(store, "n2", ["a", "b"], 15_002) == {"a": 2, "b": 2}


async def test_claim_returns_held_leases_that_are_no_longer_wanted(store: Store) -> None:
    """What a node holds but no longer names comes back too: the caller hands it over."""
    await claim(store, "n1", ["a", "b"], 1_000)
    assert await claim(store, "n1", ["a"], 2_000) == {"a": 1, "b": 1}


async def test_take_leaves_other_leases_alone(store: Store) -> None:
    """take() takes or renews only the named accounts, never one another node holds."""
    await claim(store, "n1", ["a"], 1_000)
    async with store.write() as conn:
        held = await leases.take(conn, "n2", ["a", "b"], now_ms=2_000, lease_ms=LEASE)
    assert held == {"b": 1}
    async with store.write() as conn:
        held = await leases.take(conn, "n2", ["a"], now_ms=20_000, lease_ms=LEASE)
    assert held == {"a": 2}


async def test_fencing_refuses_a_stale_epoch(store: Store) -> None:
    """A write checked against a lease another node took over since is refused; the new
    owner's is not."""
    await claim(store, "n1", ["a", "b"], 1_000)
    old = Lease("n1", 1)
    await claim(store, "n2", ["a"], 50_000)
    new = Lease("n2", 2)
    async with store.write() as conn:
        lost = await leases.fenced(conn, [("a", old), ("a", new), ("b", old), ("c", old)])
        assert lost == {("a", old), ("c", old)}
        with pytest.raises(LeaseLost):
            await leases.check(conn, "a", old)
        await leases.check(conn, "a", new)
        await leases.check(conn, "a", None)


async def test_a_takeover_never_overtakes_a_checked_write(store_url: str) -> None:
    """On PostgreSQL a write that passed the fence keeps the account until it commits: a node
    taking the account over meanwhile leaves it for its next scan, and takes it after."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: nothing can overtake")
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    try:
        await accounts(store, "a")
        await claim(store, "n1", ["a"], 1_000)
        async with store.write() as conn:
            await leases.check(conn, "a", Lease("n1", 1))
            # The lease ran out long ago, but the checked write is still open.
            assert await claim(store, "n2", ["a"], 50_000) == {}
        assert await claim(store, "n2", ["a"], 50_001) == {"a": 2}
    finally:
        await store.close()


async def test_deleting_an_account_does_not_deadlock_with_a_fenced_write(store_url: str) -> None:
    """A write that checked an account's lease and then updates the account, racing with the
    account's deletion (which deletes the lease with it), ends without a deadlock."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: the two cannot overlap")
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    try:
        await accounts(store, "a", "b")
        await claim(store, "n1", ["a", "b"], 1_000)
        checked = asyncio.Event()
        deleting = asyncio.Event()

        async def fenced_write() -> None:
            async with store.write() as conn:
                await leases.check(conn, "a", Lease("n1", 1))
                checked.set()
                await deleting.wait()
                await asyncio.sleep(0.05)  # let the delete reach the database first
                await accounts_store.set_states(conn, {"a": ("connected", None)})

        async def delete() -> None:
            await checked.wait()
            async with store.write() as conn:
                deleting.set()
                await accounts_store.delete(conn, "a")

        await asyncio.gather(fenced_write(), delete())
        async with store.read() as conn:
            assert await accounts_store.get(conn, "a") is None
    finally:
        await store.close()


async def test_fencing_any_number_of_accounts_compiles_one_statement(store: Store) -> None:
    """The accounts of a fencing check are parameters (one array, one expanding IN), so
    checks of every size share their compiled statements."""
    names = [f"f{n}" for n in range(40)]
    await accounts(store, *names)
    await claim(store, "n1", names, 1_000)
    cache = store.engine.sync_engine._compiled_cache
    async with store.write() as conn:
        await leases.fenced(conn, [("f0", Lease("n1", 1))])
    before = len(cache or {})
    for size in range(2, 40):
        async with store.write() as conn:
            pairs = [(f"f{n}", Lease("n1", 1)) for n in range(size)]
            assert await leases.fenced(conn, pairs) == set()
    assert len(cache or {}) == before
