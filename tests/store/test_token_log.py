"""The audit log's store functions: recording and retention."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from relay.app import prune_audit_log
from relay.config import StoreSettings
from relay.store import token_log
from relay.store.engine import Store, now_ms
from relay.store.migrate import migrate
from relay.store.schema import token_log as token_log_table

DAY_MS = 86_400_000


async def _record(store: Store, token_id: str, created_ms: int) -> None:
    async with store.write(notify=False) as conn:
        await token_log.append(
            conn,
            [
                token_log.Entry(
                    token_id=token_id,
                    created_ms=created_ms,
                    method="PUT",
                    route="/v1/account/{account}",
                    account="pw",
                    status=200,
                    address="192.0.2.1",
                )
            ],
        )


async def _ages(store: Store) -> list[tuple[str, int]]:
    async with store.read() as conn:
        rows = await conn.execute(
            select(token_log_table.c.token_id, token_log_table.c.created_ms).order_by(
                token_log_table.c.seq
            )
        )
        return [(r.token_id, r.created_ms) for r in rows]


async def test_prune_deletes_older_entries_only(store_url: str) -> None:
    """prune removes entries created before the cut-off and keeps the rest."""
    store = Store.open(StoreSettings(url=store_url))
    try:
        await migrate(store)
        for token_id, created in (("a", 1000), ("b", 1999), ("a", 2000), ("b", 3000)):
            await _record(store, token_id, created)
        async with store.write(notify=False) as conn:
            assert await token_log.prune(conn, before_ms=2000) == 2
        assert await _ages(store) == [("a", 2000), ("b", 3000)]
    finally:
        await store.close()


async def test_retention_task_prunes_at_start(store_url: str) -> None:
    """The background task deletes entries older than the retention period when it starts."""
    store = Store.open(StoreSettings(url=store_url))
    try:
        await migrate(store)
        now = now_ms()
        await _record(store, "old", now - 91 * DAY_MS)
        await _record(store, "kept", now - 89 * DAY_MS)
        task = asyncio.create_task(prune_audit_log(store, 90.0))
        try:
            async with asyncio.timeout(10):
                for _ in range(500):
                    if [t for t, _ in await _ages(store)] == ["kept"]:
                        break
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert [t for t, _ in await _ages(store)] == ["kept"]
    finally:
        await store.close()
