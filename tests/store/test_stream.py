"""The event stream's positions: given in commit order (no gap when transactions commit out
of seq order), the pruning watermark, and the sequencer's wake-ups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, update

from relay.events.model import Event
from relay.store import deliveries as queue
from relay.store import events as events_store
from relay.store import stream
from relay.store.engine import Store, Wake
from relay.store.schema import events

URL = "https://relay.example.com"


def _event(account: str = "a", name: str = "messageNew", path: str = "INBOX", ms: int = 1) -> Event:
    return Event(name, account, {"n": 1}, ms, path=path)


async def _record(store: Store, *batch: Event) -> None:
    async with store.write() as conn:
        await events_store.record(conn, list(batch), default_service_url=URL)


async def _assign(store: Store) -> int:
    async with store.write(notify=False) as conn:
        return (await stream.assign(conn)).given


async def _after(store: Store, cursor: int | None, limit: int = 100) -> stream.Page:
    async with store.read() as conn:
        return await stream.read(conn, after=cursor, limit=limit)


async def test_out_of_order_commits_leave_no_gap(store: Store, engine_name: str) -> None:
    """Two transactions commit in the opposite order of their seqs: a reader that read the
    later one first still gets the earlier one after its cursor."""
    if engine_name != "postgresql":
        pytest.skip("SQLite has one writer: seq order is commit order")
    early, late = _event(name="messageNew"), _event(name="messageDeleted")
    inserted = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        async with store.write() as conn:
            await events_store.record(conn, [early], default_service_url=URL)
            inserted.set()
            await release.wait()

    writer = asyncio.create_task(slow())
    await inserted.wait()
    await _record(store, late)
    assert await _assign(store) == 1
    first = await _after(store, None)
    assert [e.id for e in first.events] == [late.id]
    release.set()
    await writer
    async with store.read() as conn:
        seqs = dict((await conn.execute(select(events.c.id, events.c.seq))).all())
    assert seqs[early.id] < seqs[late.id]  # committed out of seq order
    assert await _assign(store) == 1
    second = await _after(store, first.next)
    assert [e.id for e in second.events] == [early.id]
    assert second.events[0].pos > first.events[0].pos


async def test_concurrent_assigners_give_each_position_once(store: Store) -> None:
    """Several assigners at once (nodes woken together) give each event one position, and
    positions are 1..n without holes."""
    await _record(store, *(_event(ms=i) for i in range(50)))
    await asyncio.gather(*(_assign(store) for _ in range(4)))
    async with store.read() as conn:
        positions = sorted((await conn.execute(select(events.c.pos))).scalars())
    assert positions == list(range(1, 51))


async def test_pages_follow_positions_and_filters(store: Store) -> None:
    """Pages are oldest first; a full page continues after its last event, a short one after
    the stream's last position (what the filters skipped is not read again)."""
    await _record(store, _event("a"), _event("b"), _event("a", "messageDeleted", "Sent"))
    await _assign(store)
    page = await _after(store, None, limit=2)
    assert [e.pos for e in page.events] == [1, 2]
    assert page.more
    assert page.next == 2
    rest = await _after(store, page.next, limit=2)
    assert [e.pos for e in rest.events] == [3]
    assert not rest.more
    assert rest.next == 3
    async with store.read() as conn:
        only_a = await stream.read(conn, after=None, limit=10, accounts=["a"])
        sent = await stream.read(conn, after=0, limit=10, path="Sent")
        deleted = await stream.read(conn, after=0, limit=10, event="messageDeleted")
    assert [e.pos for e in only_a.events] == [1, 3]
    assert [e.pos for e in sent.events] == [3] == [e.pos for e in deleted.events]
    assert (await _after(store, 4)).ahead


async def test_prune_raises_the_watermark(store: Store) -> None:
    """Pruning deletes old events nobody waits for; a cursor below the highest position it
    deleted is expired, one at it is not, and kept events are still read."""
    await _record(store, _event(ms=1), _event(ms=2), _event(ms=3), _event(ms=10_000))
    await _assign(store)
    async with store.write() as conn:
        # The second one is newer (as one whose delivery is pending, it is kept).
        await conn.execute(update(events).where(events.c.pos == 2).values(created_ms=99_999))
        await queue.prune(conn, before_ms=5_000)
    assert (await _after(store, 0)).expired
    assert (await _after(store, 2)).expired
    kept = await _after(store, 3)
    assert not kept.expired
    assert [e.pos for e in kept.events] == [4]
    fresh = await _after(store, None)
    assert [e.pos for e in fresh.events] == [2, 4]


async def test_sequencer_wakes_on_commit(store: Store) -> None:
    """A committed write that recorded events wakes the sequencer (Wake.EVENTS), which gives
    positions and sets the readers' event, well before its poll."""
    announced: list[bool] = []
    sequencer = stream.Sequencer(store, poll_interval=60.0, announce=lambda: announced.append(True))
    store.on_commit(Wake.EVENTS, sequencer.stored)
    await sequencer.start()
    try:
        await asyncio.sleep(0.1)  # the first round runs at start
        changed = sequencer.changed()
        await _record(store, _event())
        async with asyncio.timeout(5):
            await changed.wait()
    finally:
        await sequencer.stop()
    assert announced == [True]
    assert [e.pos for e in (await _after(store, None)).events] == [1]


async def test_a_round_after_a_local_commit_assigns_without_looking_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a commit on this node stored events the round goes straight to its write (no
    read transaction to look first); a round woken otherwise looks first, and one that finds
    nothing writes nothing."""
    sequencer = stream.Sequencer(store, poll_interval=60.0)
    await sequencer.step()
    transactions: list[str] = []
    read, write = store.read, store.write

    def counted_read() -> Any:
        transactions.append("read")
        return read()

    def counted_write(**kwargs: Any) -> Any:
        transactions.append("write")
        return write(**kwargs)

    monkeypatch.setattr(store, "read", counted_read)
    monkeypatch.setattr(store, "write", counted_write)
    await _record(store, _event(), _event())
    transactions.clear()
    sequencer.stored()
    assert await sequencer.step() == 2
    assert transactions == ["write"]
    transactions.clear()
    sequencer.wake()
    assert await sequencer.step() == 0
    assert transactions == ["read"]
    monkeypatch.undo()
    assert [e.pos for e in (await _after(store, None)).events] == [1, 2]


async def test_shared_reads_read_a_page_once_for_streams_at_one_cursor(store: Store) -> None:
    """Streams asking for the same page at once wait for one store read; a full page is kept
    for streams that ask later; every one gets the page read() answers."""
    await _record(store, *(_event(ms=i) for i in range(30)))
    await _assign(store)
    reads = stream.SharedReads(store)
    pages = await asyncio.gather(*(reads.page(0, 10) for _ in range(20)))
    assert reads.store_reads == 1
    expected = await _after(store, 0, limit=10)
    assert all(p == expected for p in pages)
    assert [e.pos for e in pages[0].events] == list(range(1, 11))
    # Later, at the same cursor: the kept page. Another cursor or filter: a read of its own.
    assert await reads.page(0, 10) == expected
    assert reads.store_reads == 1
    assert [e.pos for e in (await reads.page(10, 10)).events] == list(range(11, 21))
    assert (await reads.page(0, 10, accounts=["b"])).events == []
    assert reads.store_reads == 3


async def test_shared_reads_do_not_keep_a_short_page(store: Store) -> None:
    """A page that ends at the stream's end is not kept: the next read at its cursor sees the
    events stored since."""
    await _record(store, *(_event(ms=i) for i in range(3)))
    await _assign(store)
    reads = stream.SharedReads(store)
    short = await reads.page(0, 10)
    assert [e.pos for e in short.events] == [1, 2, 3]
    assert not short.more
    await _record(store, _event(ms=9))
    await _assign(store)
    assert [e.pos for e in (await reads.page(0, 10)).events] == [1, 2, 3, 4]


async def test_a_stream_that_goes_away_does_not_cancel_the_shared_read(store: Store) -> None:
    """The stream that started a read is cancelled (its client left): the streams waiting
    for the same read still get the page."""
    await _record(store, *(_event(ms=i) for i in range(20)))
    await _assign(store)
    reads = stream.SharedReads(store)
    first = asyncio.create_task(reads.page(0, 5))
    others = [asyncio.create_task(reads.page(0, 5)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    pages = await asyncio.gather(*others)
    assert [[e.pos for e in p.events] for p in pages] == [[1, 2, 3, 4, 5]] * 3
    assert reads.store_reads == 1


def _stream_event(pos: int, size: int = 10) -> stream.StreamEvent:
    return stream.StreamEvent(pos, f"id-{pos}", "a", "messageNew", "INBOX", 1, "x" * size)


def test_recent_answers_one_page_per_cursor_until_the_stream_moves() -> None:
    """Streams at the same cursor get the same Page (encoded once by the API); new events
    make a new one."""
    recent = stream.Recent()
    recent.reset(0)
    recent.extend([_stream_event(p) for p in range(1, 6)], 5)
    page = recent.page(2, 10, None, None, None)
    assert page is not None
    assert [e.pos for e in page.events] == [3, 4, 5]
    assert recent.page(2, 10, None, None, None) is page
    recent.extend([_stream_event(6)], 6)
    moved = recent.page(2, 10, None, None, None)
    assert moved is not None
    assert moved is not page
    assert [e.pos for e in moved.events] == [3, 4, 5, 6]
    assert recent.page(-1, 10, None, None, None) is None


def test_recent_pages_end_at_a_size() -> None:
    """With ``size``, a page ends once its payloads reach it, and says more follow."""
    recent = stream.Recent()
    recent.reset(0)
    recent.extend([_stream_event(p, size=100) for p in range(1, 11)], 10)
    page = recent.page(0, 100, None, None, None, size=250)
    assert page is not None
    assert [e.pos for e in page.events] == [1, 2, 3]
    assert page.more
    assert page.next == 3
    rest = recent.page(3, 100, None, None, None, size=10_000)
    assert rest is not None
    assert [e.pos for e in rest.events] == list(range(4, 11))
    assert not rest.more
    assert rest.next == 10


async def test_a_stream_follows_a_burst_larger_than_the_window_from_the_window(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,500 events waiting for positions, a window of 1,500: the sequencer brings the
    window up to each batch it gives, so a stream that keeps up takes all of them from the
    window (none from the store)."""
    monkeypatch.setattr(stream, "_RECENT_EVENTS", 1500)
    sequencer = stream.Sequencer(store, poll_interval=60.0)
    sequencer.readers = 1
    await sequencer.step()
    for start in range(0, 3500, 500):
        await _record(store, *(_event(ms=start + i) for i in range(500)))
    taken: list[int] = []
    fell_out: list[int] = []

    async def keep_up() -> None:
        cursor = sequencer.last
        while len(taken) < 3500:
            changed = sequencer.changed()
            page = sequencer.recent.page(cursor, 10_000, None, None, None)
            if page is None:
                fell_out.append(cursor)
                return
            taken.extend(e.pos for e in page.events)
            cursor = page.next
            if not page.events:
                await changed.wait()

    reader = asyncio.create_task(keep_up())
    await asyncio.sleep(0)  # the stream waits at the stream's end
    assert await sequencer.step() == 3500
    async with asyncio.timeout(5):
        await reader
    assert fell_out == []
    assert taken == list(range(1, 3501))
