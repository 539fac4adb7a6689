"""Migrations: the schema they build is the one the code declares; upgrades keep data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from relay.store import stream
from relay.store.engine import Store
from relay.store.migrate import _config, migrate
from relay.store.schema import metadata


@pytest.fixture
async def store(store: Store) -> AsyncIterator[Store]:
    """The store tests' migrated store (tests/store/conftest.py), migrated again before it
    closes: these tests downgrade it, and the tests sharing the database want the newest
    revision."""
    yield store
    await migrate(store)


def _diff(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_migrated_schema_matches_the_declared_tables(store: Store) -> None:
    """Every table, column, index and constraint the code declares is what migrations made."""
    async with store.read() as conn:
        assert await conn.run_sync(_diff) == []


def _to(revision: str) -> Any:
    def run(connection: Connection) -> None:
        command.downgrade(_config(connection), revision)

    return run


async def test_0007_keeps_subscriptions_and_drops_folder_state_of_old_ids(store: Store) -> None:
    """0006 -> 0007: the INBOX subscription moves to graph_subscriptions (so the watcher can
    delete it at Graph); folder state keyed by the old message ids is dropped; and back."""
    async with store.write() as conn:
        await conn.run_sync(_to("0006"))
        await conn.execute(
            text(
                "INSERT INTO accounts (id, name, email, backend, state, config, created_ms,"
                " updated_ms) VALUES ('g', 'G', 'g@example.com', 'graph', 'connected', '{}',"
                " 1, 1)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO graph_accounts (account, mode, subscription_id, resource,"
                " expires_ms, client_state, last_error, updated_ms) VALUES ('g',"
                " 'subscription', 'sub-1', 'users/x/messages', 99, :state, NULL, 5)"
            ),
            {"state": b"sealed"},
        )
        await conn.execute(
            text(
                "INSERT INTO graph_folders (account, folder, delta_link, messages, uid_next,"
                " synced_ms, updated_ms) VALUES ('g', 'inbox', 'link', '{}', 3, 1, 1)"
            )
        )
    await migrate(store)
    async with store.read() as conn:
        subs = (await conn.execute(text("SELECT * FROM graph_subscriptions"))).mappings().all()
        modes = (await conn.execute(text("SELECT * FROM graph_accounts"))).mappings().all()
        folders = (await conn.execute(text("SELECT * FROM graph_folders"))).all()
    assert [(s["subscription_id"], s["folder"], s["expires_ms"]) for s in subs] == [
        ("sub-1", "inbox", 99)
    ]
    assert bytes(subs[0]["client_state"]) == b"sealed"
    assert [(m["account"], m["mode"]) for m in modes] == [("g", "subscription")]
    assert "subscription_id" not in modes[0]
    assert folders == []
    async with store.write() as conn:
        await conn.run_sync(_to("0006"))
        columns = (await conn.execute(text("SELECT * FROM graph_accounts"))).keys()
    assert "subscription_id" in columns


async def test_0014_fills_in_paths_and_existing_events_get_positions(store: Store) -> None:
    """0013 -> 0014: events stored before keep their payloads, get their path from them, and
    the first sequencer round gives them positions in seq order; and back."""
    async with store.write() as conn:
        await conn.run_sync(_to("0013"))
        for n, path in ((1, "INBOX"), (2, None), (3, "Sent")):
            body = {"account": "a", "event": "messageNew", "data": {}}
            if path is not None:
                body["path"] = path
            await conn.execute(
                text(
                    "INSERT INTO events (id, account, event, created_ms, payload)"
                    " VALUES (:id, 'a', 'messageNew', 1, :payload)"
                ),
                {"id": f"e{n}", "payload": json.dumps(body)},
            )
    await migrate(store)
    async with store.read() as conn:
        paths = (await conn.execute(text("SELECT id, path FROM events ORDER BY seq"))).all()
    assert [tuple(r) for r in paths] == [("e1", "INBOX"), ("e2", None), ("e3", "Sent")]
    await stream.Sequencer(store, poll_interval=60.0).step()
    async with store.read() as conn:
        page = await stream.read(conn, after=None, limit=10)
    assert [(e.id, e.pos) for e in page.events] == [("e1", 1), ("e2", 2), ("e3", 3)]
    async with store.write() as conn:
        await conn.run_sync(_to("0013"))
        columns = (await conn.execute(text("SELECT * FROM events"))).keys()
    assert "pos" not in columns
