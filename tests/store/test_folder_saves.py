"""Folder state saved for many folders at once: each one a compare-and-set on its version."""

from __future__ import annotations

from relay.config import StoreSettings
from relay.store import accounts as accounts_store
from relay.store import folders as folders_store
from relay.store.engine import Store
from relay.store.migrate import migrate


async def test_save_many_is_a_compare_and_set_per_folder(store_url: str) -> None:
    store = Store.open(StoreSettings(url=store_url))
    await migrate(store)
    try:
        async with store.write() as conn:
            for name in ("a", "b"):
                await accounts_store.insert(
                    conn,
                    {
                        "id": name,
                        "name": name,
                        "email": f"{name}@example.com",
                        "backend": "imap",
                        "state": "connected",
                        "config": {},
                    },
                )
                for path in ("INBOX", "Sent"):
                    await folders_store.ensure(conn, name, path, None)
            # b/Sent moves on under us (another node's save).
            assert await folders_store.save(conn, "b", "Sent", version=0, values={"uidnext": 99})
        saves = [
            folders_store.Save(
                "a", "INBOX", 0, {"uidnext": 5, "uids": "1:4", "flags": {"\\Seen": "1:2"}}
            ),
            folders_store.Save("a", "Sent", 0, {"uidnext": 7}, synced=True),
            folders_store.Save("b", "Sent", 0, {"uidnext": 8}),  # stale version
            folders_store.Save("b", "INBOX", 0, {"uidnext": 9}),
            folders_store.Save("b", "INBOX", 0, {"uidnext": 10}),  # same folder again
            folders_store.Save("c", "INBOX", 0, {"uidnext": 11}),  # no such folder
        ]
        async with store.write() as conn:
            assert await folders_store.save_many(conn, saves) == [
                True,
                True,
                False,
                True,
                False,
                False,
            ]
        async with store.read() as conn:
            rows = {
                (r["account"], r["path"]): r
                for name in ("a", "b")
                for r in await folders_store.for_account(conn, name)
            }
        assert (rows["a", "INBOX"]["uidnext"], rows["a", "INBOX"]["uids"]) == (5, "1:4")
        assert rows["a", "INBOX"]["flags"] == {"\\Seen": "1:2"}
        assert rows["a", "INBOX"]["version"] == 1
        assert rows["a", "INBOX"]["synced_ms"] is None
        assert rows["a", "Sent"]["uidnext"] == 7
        assert rows["a", "Sent"]["synced_ms"] is not None
        assert (rows["b", "Sent"]["uidnext"], rows["b", "Sent"]["version"]) == (99, 1)
        assert (rows["b", "INBOX"]["uidnext"], rows["b", "INBOX"]["version"]) == (9, 1)
        async with store.write() as conn:
            assert await folders_store.save_many(conn, []) == []
    finally:
        await store.close()
