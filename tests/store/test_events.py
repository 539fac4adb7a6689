"""record(): seemsLikeNew decided against the account's seen messages and messageBounce's
sentQueueId looked up in the outbox, both in the transaction that stores the events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from relay.config import StoreSettings
from relay.events.model import Event
from relay.store import events as events_store
from relay.store.engine import Store
from relay.store.migrate import migrate
from relay.store.schema import accounts, events, outbox, seen_messages

URL = "https://relay.example.com"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store with accounts ``a`` and ``b``."""
    opened = Store.open(StoreSettings(url=store_url))
    await migrate(opened)
    async with opened.write() as conn:
        for account in ("a", "b"):
            await conn.execute(
                accounts.insert().values(
                    id=account,
                    name=account,
                    email=f"{account}@example.com",
                    backend="imap",
                    state="connected",
                    config={},
                    created_ms=1,
                    updated_ms=1,
                )
            )
    try:
        yield opened
    finally:
        await opened.close()


def _new(account: str, key: str | None, *, path: str = "INBOX") -> Event:
    data = {"id": f"m-{key}", "uid": 1, "path": path, "seemsLikeNew": True}
    return Event("messageNew", account, data, 1, path=path, seen_key=key)


async def _stored(store: Store, event: Event) -> dict[str, Any]:
    async with store.read() as conn:
        payload = await conn.scalar(select(events.c.payload).where(events.c.id == event.id))
    data: dict[str, Any] = json.loads(payload)["data"]
    return data


async def _record(store: Store, batch: list[Event]) -> None:
    async with store.write() as conn:
        await events_store.record(conn, batch, default_service_url=URL)


async def test_seems_like_new_per_account_key(store: Store) -> None:
    """A key the account saw before (in an earlier transaction, or earlier in the same batch)
    makes seemsLikeNew false; other keys, other accounts and events without a key stay true."""
    first = [_new("a", "K1"), _new("a", "K1"), _new("a", "K2"), _new("a", None)]
    await _record(store, first)
    assert [(await _stored(store, e))["seemsLikeNew"] for e in first] == [
        True,
        False,
        True,
        True,
    ]
    later = [_new("a", "K1"), _new("b", "K1"), _new("a", None)]
    await _record(store, later)
    assert [(await _stored(store, e))["seemsLikeNew"] for e in later] == [False, True, True]
    async with store.read() as conn:
        rows = await conn.scalar(
            select(func.count()).select_from(seen_messages).where(seen_messages.c.account == "a")
        )
    assert rows == 2


async def test_a_rolled_back_event_leaves_its_message_unseen(store: Store) -> None:
    """The seen set changes with the events: a transaction that fails marks nothing seen."""

    async def fail() -> None:
        async with store.write() as conn:
            await events_store.record(conn, [_new("a", "R1")], default_service_url=URL)
            raise RuntimeError("a lost compare-and-set")

    with pytest.raises(RuntimeError):
        await fail()
    again = _new("a", "R1")
    await _record(store, [again])
    assert (await _stored(store, again))["seemsLikeNew"] is True


async def test_two_writers_cannot_both_find_a_message_new(store: Store) -> None:
    """The second of two overlapping transactions storing the same key waits for the first
    and finds the message seen."""
    one, two = _new("a", "C1"), _new("a", "C1")
    async with store.write() as conn:
        await events_store.record(conn, [one], default_service_url=URL)
        racing = asyncio.create_task(_record(store, [two]))
        await asyncio.sleep(0.3)
        assert not racing.done()
    await racing
    assert (await _stored(store, one))["seemsLikeNew"] is True
    assert (await _stored(store, two))["seemsLikeNew"] is False


async def test_deleting_the_account_forgets_its_seen_messages(store: Store) -> None:
    """seen_messages rows go with their account."""
    await _record(store, [_new("b", "D1")])
    async with store.write() as conn:
        await conn.execute(delete(accounts).where(accounts.c.id == "b"))
        left = await conn.scalar(
            select(func.count()).select_from(seen_messages).where(seen_messages.c.account == "b")
        )
    assert left == 0


def _queued(queue_id: str, account: str, message_id: str) -> dict[str, Any]:
    return {
        "queue_id": queue_id,
        "account": account,
        "message_id": message_id,
        "subject": "s",
        "envelope": {"from": "a@example.com", "to": ["x@example.net"]},
        "raw": b"sealed",
        "size": 6,
        "status": "sent",
        "attempts": 1,
        "max_attempts": 10,
        "send_at_ms": 1,
        "next_attempt_ms": 1,
        "created_ms": 1,
        "updated_ms": 1,
    }


async def test_bounce_gets_the_outbox_queue_id_of_its_original(store: Store) -> None:
    """sentQueueId is the account's newest outbox entry with the bounced Message-ID; another
    account's entry, or none, adds nothing; other events are not looked up."""
    async with store.write() as conn:
        await conn.execute(
            outbox.insert(),
            [
                _queued("q-old", "a", "<sent@example.com>"),
                _queued("q-new", "a", "<sent@example.com>"),
                _queued("q-b", "b", "<other@example.com>"),
            ],
        )
    batch = [
        Event("messageBounce", "a", {"bounceMessage": "x", "messageId": "<sent@example.com>"}, 1),
        Event("messageBounce", "a", {"bounceMessage": "x", "messageId": "<other@example.com>"}, 1),
        Event("messageBounce", "a", {"bounceMessage": "x"}, 1),
        Event("messageSent", "a", {"messageId": "<sent@example.com>"}, 1),
    ]
    await _record(store, batch)
    found = [(await _stored(store, e)).get("sentQueueId") for e in batch]
    assert found == ["q-new", None, None, None]
