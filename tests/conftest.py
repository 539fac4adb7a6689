"""Shared fixtures: a throwaway store on each engine and an API client for the relay.

Every test that uses ``store_url`` (directly or through ``client``) runs once on SQLite and
once on PostgreSQL. ``RELAY_TEST_ENGINES=sqlite`` narrows that for a quick local run.
PostgreSQL comes from ``RELAY_TEST_PG`` (default: the local server, trust auth); one fresh
database is created per test session and dropped at the end.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import shutil
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import aiohttp.web_app
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.app import create_app
from relay.config import (
    ImapSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from relay.store import Store
from relay.store.migrate import migrate
from relay.store.schema import metadata
from tests.blocking import allow_known


class LeakedResource(UserWarning):
    """A socket or transport some test left open, found when its test ended."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection imported (modules, classes, the parsed OpenAPI document) out of
    the collector's reach: the per-test collection below then walks only what tests create,
    a few milliseconds instead of most of a second."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long end-to-end tests (marked ``slow``) first: spread over the workers from the start
    (``make test`` hands tests out two at a time), they no longer end the run one by one
    while the other workers wait."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Collect the garbage a test leaves once its fixtures (and its event loop) are gone.

    A socket left open is otherwise found whenever the collector next runs, in whatever
    test runs then, which fails that test with a warning it has nothing to do with. Here it
    is named with the test that left it, in the run's warnings summary.
    """
    yield
    # aiohttp keeps each application's middleware chain in an lru_cache of 1,024 entries
    # keyed by the application: every relay a test started would stay alive (and be walked
    # by each collection below) until a thousand more came after it.
    cached = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if cached is not None:
        cached.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    for found in caught:
        if issubclass(found.category, ResourceWarning):
            warnings.warn(LeakedResource(f"{item.nodeid}: {found.message}"), stacklevel=1)


API_TOKEN = "test-token-" + "0" * 32
PG_ADMIN = os.environ.get("RELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ENGINES = [e for e in os.environ.get("RELAY_TEST_ENGINES", "sqlite,postgresql").split(",") if e]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    name = f"relay_test_{os.getpid()}_{secrets.token_hex(3)}"
    base = PG_ADMIN.rsplit("/", 1)[0]

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN.replace("postgresql://", "postgres://", 1))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def admin(sql: str) -> None:
        _in_own_loop(run(sql))

    admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _in_own_loop(work: Awaitable[None]) -> None:
    # Its own thread and loop: the fixture may be first requested from inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated once per test process: each test starts from a copy (the
    migrations take longer than the rest of a relay's start-up)."""
    path = tmp_path_factory.mktemp("template") / "relay.db"

    async def run() -> None:
        store = Store.open(StoreSettings(url=f"sqlite:///{path}"))
        try:
            await migrate(store)
        finally:
            await store.close()

    _in_own_loop(run())
    return path


@pytest.fixture
async def store_url(
    engine_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """An empty, migrated store URL for one test."""
    if engine_name == "sqlite":
        path = tmp_path / "relay.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("pg_database")
    store = Store.open(StoreSettings(url=url))
    try:
        await migrate(store)  # after the session's first test: one read finds it at the head
        async with store.write() as conn:
            await _empty(conn)
    finally:
        await store.close()
    yield url


async def _empty(conn: AsyncConnection) -> None:
    """Delete every row of the session's PostgreSQL database.

    ``DELETE`` rather than ``TRUNCATE``: on tables this small it takes a millisecond, where
    ``TRUNCATE`` (new files for every table) takes about fifty; identities restart as they
    would after ``TRUNCATE ... RESTART IDENTITY``.
    """
    for table in reversed(metadata.sorted_tables):
        await conn.execute(table.delete())
    sequences = await conn.scalars(
        text("SELECT oid::regclass::text FROM pg_class WHERE relkind = 'S'")
    )
    for sequence in sequences.all():
        await conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))


@pytest.fixture
def settings(store_url: str, tmp_path: Path) -> Settings:
    return Settings(
        server=ServerSettings(host="127.0.0.1", port=3000, service_url="https://relay.example.com"),
        store=StoreSettings(url=store_url),
        security=SecuritySettings(
            api_token=API_TOKEN, secret="test-secret-for-credentials", key_file=str(tmp_path / "k")
        ),
        # Accounts in API tests point at servers that do not exist: no listeners there.
        imap=ImapSettings(watch=False),
    )


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path
) -> AsyncIterator[MakeClient]:
    """Start the relay for ``settings`` and return a client that sends the API token.

    Once the relay has started (migrations and key loading are start-up work), blockbuster
    fails the test on any blocking call made on the event loop.
    """
    guard: AbstractContextManager[BlockBuster] | None = None

    async def make(settings: Settings, *, token: str | None = API_TOKEN) -> TestClient:
        nonlocal guard
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if guard is not None:
            # A second relay in one test (a restart) has its own start-up work to do.
            guard.__exit__(None, None, None)
            guard = None
        client = await aiohttp_client(create_app(settings, base_dir=tmp_path), headers=headers)
        guard = blockbuster_ctx()
        bb = guard.__enter__()
        allow_known(bb)
        return client

    yield make
    if guard is not None:
        guard.__exit__(None, None, None)


@pytest.fixture
async def client(make_client: MakeClient, settings: Settings) -> TestClient:
    return await make_client(settings)
