"""The wake-up bus between nodes (``relay.store.bus``): PostgreSQL ``LISTEN``/``NOTIFY`` on
a connection of its own; nothing on SQLite.

The cross-node tests run two buses with different node ids on one database, as two nodes
would. Each bus's connection carries its own ``application_name`` so that a test can end
exactly that backend from the server side, as a restart or a network cut would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.engine.url import make_url

from relay.config import StoreSettings
from relay.store import Store
from relay.store.bus import Bus, listen_dsn

# Upper bound on any wait (the bus pings an idle connection every 5 s: a connection killed
# while idle is noticed by then).
WAIT = 30.0

MakeBus = Callable[..., Awaitable[Bus]]


@pytest.fixture
def pg_url(store_url: str) -> str:
    """The PostgreSQL store of the test (several nodes share a store only there)."""
    if not store_url.startswith("postgresql"):
        pytest.skip("the wake-up bus runs on PostgreSQL only")
    return store_url


def dsn_of(url: str, node: str) -> str:
    """The bus DSN of ``url`` with the node as application_name (to find its backend)."""
    dsn = listen_dsn(str(make_url(url).update_query_dict({"application_name": f"bus-{node}"})))
    assert dsn is not None
    return dsn


@pytest.fixture
async def make_bus(pg_url: str) -> AsyncIterator[MakeBus]:
    """Start a bus for a node on the test's database and wait until it listens."""
    started: list[Bus] = []

    async def make(node: str, *, subscribe: dict[str, list[str]] | None = None) -> Bus:
        bus = Bus(dsn_of(pg_url, node), node)
        for topic, into in (subscribe or {}).items():
            bus.subscribe(topic, into.append)
        await bus.start()
        started.append(bus)
        async with asyncio.timeout(WAIT):
            await bus.connected.wait()
        return bus

    yield make
    for bus in started:
        await bus.stop()


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``check()`` holds."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def backends(url: str, node: str) -> int:
    """How many server backends the bus of ``node`` has now."""
    conn = await asyncpg.connect(listen_dsn(url))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                f"bus-{node}",
            )
        )
    finally:
        await conn.close()


async def kill(url: str, node: str) -> None:
    """End the bus connection of ``node`` from the server side and wait until it is gone."""
    conn = await asyncpg.connect(listen_dsn(url))
    try:
        killed = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            f"bus-{node}",
        )
        assert killed == 1
    finally:
        await conn.close()
    async with asyncio.timeout(WAIT):
        while True:
            if not await backends(url, node):
                return
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        (
            "postgresql://relay:pw@db.example.com:5432/relay",
            "postgresql://relay:pw@db.example.com:5432/relay",
        ),
        ("postgresql+asyncpg://relay:pw@db:5433/relay", "postgresql://relay:pw@db:5433/relay"),
        ("postgres://relay@db/relay", "postgresql://relay@db/relay"),
        # The password is passed on as it is written (still quoted).
        ("postgresql://relay:p%40ss%2Fw@db/relay", "postgresql://relay:p%40ss%2Fw@db/relay"),
        ("sqlite:///var/lib/relay/relay.db", None),
        ("sqlite+aiosqlite:///relay.db", None),
        ("sqlite://", None),
    ],
)
def test_listen_dsn(url: str, dsn: str | None) -> None:
    """PostgreSQL store URLs (any driver) become plain asyncpg DSNs; SQLite has none."""
    assert listen_dsn(url) == dsn


async def test_on_sqlite_the_bus_is_idle(tmp_path: Path) -> None:
    """On SQLite the bus connects nowhere: start, send and stop do nothing and do not fail."""
    bus = Bus(listen_dsn(f"sqlite:///{tmp_path / 'relay.db'}"), "solo")
    heard: list[str] = []
    bus.subscribe("account", heard.append)
    await bus.start()
    bus.send("account", "acme")
    await asyncio.sleep(0)
    assert not bus.connected.is_set()
    await bus.stop()
    await bus.stop()
    assert heard == []


async def test_a_message_reaches_the_other_nodes_subscribers_of_its_topic(
    make_bus: MakeBus,
) -> None:
    """A message one node sends reaches another node's subscribers of that topic, with its
    value intact, and not the subscribers of another topic."""
    accounts: list[str] = []
    graph: list[str] = []
    sender = await make_bus("n1")
    await make_bus("n2", subscribe={"account": accounts, "graph": graph})
    sender.send("account", "acme")
    sender.send("account", "with\ttab and ünicode")
    await until(lambda: len(accounts) == 2, "the messages")
    assert accounts == ["acme", "with\ttab and ünicode"]
    assert graph == []


async def test_many_messages_arrive_in_order(make_bus: MakeBus) -> None:
    """Messages sent in a burst (batched) all arrive, in the order they were sent."""
    heard: list[str] = []
    sender = await make_bus("n1")
    await make_bus("n2", subscribe={"account": heard})
    for i in range(200):
        sender.send("account", f"a{i}")
        if i % 50 == 0:
            await asyncio.sleep(0)  # let some batches go out while more queue
    await until(lambda: len(heard) == 200, "all messages")
    assert heard == [f"a{i}" for i in range(200)]


async def test_a_node_does_not_hear_itself(make_bus: MakeBus) -> None:
    """A node's own messages are not handed to its subscribers."""
    one: list[str] = []
    two: list[str] = []
    n1 = await make_bus("n1", subscribe={"account": one})
    n2 = await make_bus("n2", subscribe={"account": two})
    n1.send("account", "from-n1")
    await until(lambda: two == ["from-n1"], "n2 to hear n1")
    # n1's connection gets notifications in commit order: by the time the reply is there,
    # n1's own message (committed earlier) came and went.
    n2.send("account", "from-n2")
    await until(lambda: one != [], "n1 to hear n2")
    assert one == ["from-n2"]
    assert two == ["from-n1"]


async def test_a_killed_connection_comes_back_and_says_so(pg_url: str, make_bus: MakeBus) -> None:
    """When the server ends the listening connection, the bus reconnects, runs the
    ``on_reconnect`` callbacks once, and messages flow both ways again."""
    one: list[str] = []
    two: list[str] = []
    reconnected: list[str] = []
    n1 = await make_bus("n1", subscribe={"account": one})
    n2 = Bus(dsn_of(pg_url, "n2"), "n2")
    n2.subscribe("account", two.append)
    n2.on_reconnect(lambda: reconnected.append("n2"))
    await n2.start()
    try:
        async with asyncio.timeout(WAIT):
            await n2.connected.wait()
        assert reconnected == []  # the first connection is not a reconnection

        await kill(pg_url, "n2")
        await until(lambda: reconnected == ["n2"], "the reconnection")
        await until(lambda: n2.connected.is_set(), "the connection")

        n1.send("account", "to-n2")
        await until(lambda: two == ["to-n2"], "n2 to hear n1 again")
        n2.send("account", "to-n1")
        await until(lambda: one == ["to-n1"], "n1 to hear n2 again")
        assert reconnected == ["n2"]
        assert await backends(pg_url, "n2") == 1
    finally:
        await n2.stop()


async def test_a_message_sent_while_the_connection_is_down_goes_out_after(
    pg_url: str, make_bus: MakeBus
) -> None:
    """A message sent after the sender's connection died is not lost: the batch that failed
    is sent again on the next connection."""
    heard: list[str] = []
    sender = await make_bus("n1")
    await make_bus("n2", subscribe={"account": heard})
    await kill(pg_url, "n1")
    sender.send("account", "while-down")
    await until(lambda: heard == ["while-down"], "the queued message")
    sender.send("account", "after")
    await until(lambda: heard == ["while-down", "after"], "the next message")


async def test_stop_sends_what_is_queued(make_bus: MakeBus) -> None:
    """A message sent just before the bus stops still goes out."""
    heard: list[str] = []
    sender = await make_bus("n1")
    await make_bus("n2", subscribe={"account": heard})
    sender.send("account", "last words")
    await sender.stop()
    await until(lambda: heard == ["last words"], "the last message")


async def test_stop_sends_a_message_already_on_its_way(make_bus: MakeBus) -> None:
    """A message the bus has started sending when ``stop()`` comes (its batch taken from
    the queue, the round trip under way) still goes out: stop does not cut it off."""
    heard: list[str] = []
    all_heard = asyncio.Event()

    def hear(value: str) -> None:
        heard.append(value)
        if len(heard) == 3:
            all_heard.set()

    receiver = await make_bus("n2")
    receiver.subscribe("account", hear)
    for spins in (1, 2, 3):
        sender = await make_bus(f"n1-{spins}")
        sender.send("account", f"m{spins}")
        for _ in range(spins):
            await asyncio.sleep(0)  # the bus takes the batch and starts its round trip
        await sender.stop()
    # Delivery takes milliseconds once sent; a message that was cut off never comes.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await all_heard.wait()
    assert sorted(heard) == ["m1", "m2", "m3"]


async def test_a_message_too_long_for_notify_is_dropped_with_a_warning(make_bus: MakeBus) -> None:
    """A message over NOTIFY's payload limit is dropped (logged) and does not hold up the
    ones after it."""
    heard: list[str] = []
    sender = await make_bus("n1")
    await make_bus("n2", subscribe={"graph": heard})
    with structlog.testing.capture_logs() as logs:
        sender.send("graph", "x" * 8000)
    assert [e["event"] for e in logs] == ["wake-up too long to send"]
    assert logs[0]["topic"] == "graph"
    sender.send("graph", "short")
    await until(lambda: heard == ["short"], "the short message")


async def test_the_bus_connects_with_the_ssl_option_the_store_accepts(pg_url: str) -> None:
    """A store URL carrying SQLAlchemy/asyncpg's ``ssl`` option (the way to ask for TLS)
    works for the store, so the bus connects with it too."""
    url = str(make_url(pg_url).update_query_dict({"ssl": "prefer"}))
    store = Store.open(StoreSettings(url=url))
    try:
        async with store.read() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await store.close()
    bus = Bus(listen_dsn(url), "n1")
    await bus.start()
    try:
        # A first connection takes milliseconds; the bus retries (after 0.5, 1, 2, 4 s).
        async with asyncio.timeout(10):
            await bus.connected.wait()
    except TimeoutError:
        raise AssertionError(f"the bus never connected with {url}") from None
    finally:
        await bus.stop()
