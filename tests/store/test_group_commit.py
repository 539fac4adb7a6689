"""Group commit: concurrent writes share transactions; each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from relay.config import StoreSettings
from relay.errors import StoreError
from relay.store import settings as settings_store
from relay.store.engine import Store
from relay.store.migrate import migrate
from relay.store.schema import settings as settings_table

ROOT = Path(__file__).resolve().parents[2]


async def _open(tmp_path: Path) -> Store:
    store = Store.open(StoreSettings(url=f"sqlite:///{tmp_path / 'relay.db'}"))
    await migrate(store)
    return store


async def _keys(store: Store) -> set[str]:
    async with store.read() as conn:
        return {str(k) for k in (await conn.scalars(select(settings_table.c.key))).all()}


async def test_a_failing_write_fails_only_its_own_caller(tmp_path: Path) -> None:
    """Twenty writers queue at once; the odd ones raise after writing. The even ones are
    stored, the odd ones' writes are undone, and they shared transactions."""
    store = await _open(tmp_path)
    assert store._group is not None
    groups_before = store._group.groups

    async def writer(i: int) -> None:
        async with store.write() as conn:
            await settings_store.put(conn, f"k{i}", i)
            await asyncio.sleep(0)
            if i % 2:
                raise LookupError(f"writer {i} changed its mind")

    try:
        results = await asyncio.gather(*(writer(i) for i in range(20)), return_exceptions=True)
        for i, result in enumerate(results):
            if i % 2:
                assert isinstance(result, LookupError)
                assert str(i) in str(result)
            else:
                assert result is None
        assert await _keys(store) == {f"k{i}" for i in range(0, 20, 2)}
        # Fewer transactions than writers: they were grouped.
        assert store._group.groups - groups_before < 10
    finally:
        await store.close()


async def test_a_refused_statement_fails_only_its_own_caller(tmp_path: Path) -> None:
    """A constraint violation in one writer's block is its StoreError; the writers before
    and after it in the same group are committed."""
    store = await _open(tmp_path)

    async def good(i: int) -> None:
        async with store.write() as conn:
            await settings_store.put(conn, f"good{i}", i)

    async def bad() -> None:
        async with store.write() as conn:
            await conn.execute(settings_table.insert().values(key="dup", value=1, updated_ms=1))
            await conn.execute(settings_table.insert().values(key="dup", value=2, updated_ms=2))

    try:
        results = await asyncio.gather(
            good(0), good(1), bad(), good(2), good(3), return_exceptions=True
        )
        assert [type(r) for r in results] == [type(None)] * 2 + [StoreError] + [type(None)] * 2
        assert await _keys(store) == {"good0", "good1", "good2", "good3"}
    finally:
        await store.close()


async def test_a_caller_is_answered_after_its_commit(tmp_path: Path) -> None:
    """When ``write()`` returns, another connection already sees the data."""
    store = await _open(tmp_path)
    seen: list[bool] = []

    async def writer(i: int) -> None:
        async with store.write() as conn:
            await settings_store.put(conn, f"k{i}", i)
        async with store.read() as conn:
            seen.append(await settings_store.get(conn, f"k{i}") == i)

    try:
        await asyncio.gather(*(writer(i) for i in range(30)))
        assert seen == [True] * 30
    finally:
        await store.close()


async def test_cancelled_writers_leave_nothing(tmp_path: Path) -> None:
    """A writer cancelled while it waits for its turn, or in the middle of its block, stores
    nothing; the writers around it are not disturbed."""
    store = await _open(tmp_path)
    blocked = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        async with store.write() as conn:
            await settings_store.put(conn, "slow", 1)
            blocked.set()
            await release.wait()

    async def stuck_in_block() -> None:
        async with store.write() as conn:
            await settings_store.put(conn, "stuck", 1)
            await asyncio.Event().wait()

    async def plain(key: str) -> None:
        async with store.write() as conn:
            await settings_store.put(conn, key, 1)

    try:
        first = asyncio.create_task(slow())
        await blocked.wait()
        waiting = asyncio.create_task(plain("never"))
        after = asyncio.create_task(plain("after"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        await first
        await after
        with pytest.raises(asyncio.CancelledError):
            await waiting
        stuck = asyncio.create_task(stuck_in_block())
        await asyncio.sleep(0.05)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        await plain("last")
        assert await _keys(store) == {"slow", "after", "last"}
    finally:
        await store.close()


async def test_commit_hooks_run_once_per_topic_of_a_group(tmp_path: Path) -> None:
    """A group wakes each topic its committed writes named, not the rolled-back ones'."""
    store = await _open(tmp_path)
    woken: list[str] = []
    store.on_commit("a", lambda: woken.append("a"))
    store.on_commit("b", lambda: woken.append("b"))

    async def writer(topic: str, fail: bool = False) -> None:
        async with store.write(notify=topic) as conn:
            await conn.execute(text("SELECT 1"))
            if fail:
                raise LookupError(topic)

    try:
        await asyncio.gather(
            writer("a"), writer("a"), writer("b", fail=True), return_exceptions=True
        )
        assert "a" in woken
        assert "b" not in woken
    finally:
        await store.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from relay.config import StoreSettings
    from relay.store import settings as settings_store
    from relay.store.engine import Store
    from relay.store.migrate import migrate

    async def main() -> None:
        store = Store.open(StoreSettings(url={url!r}))
        await migrate(store)
        print("ready", flush=True)
        counter = iter(range(10**9))

        async def writer() -> None:
            while True:
                key = f"k{{next(counter)}}"
                async with store.write() as conn:
                    await settings_store.put(conn, key, 1)
                print(key, flush=True)

        await asyncio.gather(*(writer() for _ in range(32)))

    asyncio.run(main())
    """
)


def test_kill_during_groups_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """kill -9 while 32 writers keep groups busy: every write that was answered is stored."""
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT), url=url))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acknowledged) < 1500:
            line = proc.stdout.readline()
            assert line, "the writer stopped early"
            acknowledged.append(line.strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # What was printed before the kill but not read yet was acknowledged too.
    acknowledged += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    proc.stdout.close()

    async def stored() -> set[str]:
        store = Store.open(StoreSettings(url=url))
        try:
            async with store.read() as conn:
                assert await conn.scalar(select(func.count()).select_from(settings_table))
            return await _keys(store)
        finally:
            await store.close()

    keys = asyncio.run(stored())
    missing = set(acknowledged) - keys
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}"
