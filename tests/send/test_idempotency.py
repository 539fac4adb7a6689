"""Idempotency-Key: concurrent submits with one key, and two nodes racing on the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.config import Settings, StoreSettings
from relay.store import outbox as outbox_store
from relay.store.engine import Store
from relay.store.migrate import migrate
from relay.store.outbox import Admitted
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.smtp import SmtpPeer

from .conftest import add_password_account, send_settings

TO = {"to": [{"address": "rita@example.net"}], "subject": "Hello", "text": "once"}


async def test_concurrent_submits_with_a_new_key_store_one_message(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """Submits racing with one new key: every answer is the same 200; one message is sent."""
    client = await make_client(send_settings(settings))
    await add_password_account(client, smtp)

    async def one() -> tuple[int, dict[str, Any], str | None]:
        resp = await client.post(
            "/v1/account/acct/submit", json=TO, headers={"Idempotency-Key": "new-key"}
        )
        return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")

    answers = await asyncio.gather(*(one() for _ in range(5)))
    assert [status for status, _, _ in answers] == [200] * 5
    assert len({body["queueId"] for _, body, _ in answers}) == 1
    assert sorted(str(replayed) for _, _, replayed in answers) == ["None"] + ["true"] * 4
    await smtp.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(smtp.received) == 1
    assert (await call(client, "GET", "/v1/outbox"))["total"] == 1


def _row(queue_id: str, *, key: str | None = "k", body: str = "h1", created: int = 1000) -> Any:
    return {
        "queue_id": queue_id,
        "account": "acct",
        "message_id": f"<{queue_id}@example.com>",
        "subject": "",
        "envelope": {"from": "me@example.com", "to": ["rita@example.net"]},
        "raw": b"sealed",
        "size": 6,
        "status": "queued",
        "attempts": 0,
        "max_attempts": 3,
        "send_at_ms": created,
        "next_attempt_ms": created,
        "idempotency_key": key,
        "request_hash": body,
        "created_ms": created,
        "updated_ms": created,
    }


@pytest.fixture
async def nodes(store_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, as two relay nodes would have."""
    first = await asyncio.to_thread(Store.open, StoreSettings(url=store_url))
    second = await asyncio.to_thread(Store.open, StoreSettings(url=store_url))
    await migrate(first)
    yield first, second
    await first.close()
    await second.close()


async def _insert(store: Store, *rows: Any, since: int = 0) -> list[Admitted]:
    async with store.write() as conn:
        return await outbox_store.insert_many(conn, rows, keys_since_ms=since)


@pytest.mark.parametrize(("body", "expected"), [("h1", "replayed"), ("h2", "conflict")])
async def test_a_node_racing_another_on_a_new_key_answers_with_the_others_row(
    nodes: tuple[Store, Store], body: str, expected: str
) -> None:
    """While one transaction holds a new key, another's insert waits and then defers to it."""
    first, second = nodes
    async with first.write() as conn:
        (mine,) = await outbox_store.insert_many(conn, [_row("a" * 16)], keys_since_ms=0)
        racing = asyncio.create_task(_insert(second, _row("b" * 16, body=body)))
        await asyncio.sleep(0.3)
        assert not racing.done()
    (theirs,) = await racing
    assert (mine.replayed, mine.conflict) == (False, False)
    assert theirs.row["queue_id"] == "a" * 16
    assert (theirs.replayed, theirs.conflict) == (expected == "replayed", expected == "conflict")


async def test_one_batch_with_a_key_twice_stores_the_first(nodes: tuple[Store, Store]) -> None:
    """Two rows with one key in one insert: the second answers with the first's row."""
    first, _ = nodes
    a, b, c = await _insert(first, _row("a" * 16), _row("b" * 16), _row("c" * 16, key=None))
    assert (a.replayed, b.replayed, c.replayed) == (False, True, False)
    assert b.row["queue_id"] == "a" * 16
    assert c.row["queue_id"] == "c" * 16


async def test_a_key_older_than_the_window_is_used_again(nodes: tuple[Store, Store]) -> None:
    """A key last used before ``keys_since_ms`` is freed and the new row stored."""
    first, _ = nodes
    await _insert(first, _row("a" * 16, created=1000))
    (again,) = await _insert(first, _row("b" * 16, body="h2", created=9000), since=5000)
    assert (again.replayed, again.conflict) == (False, False)
    assert again.row["queue_id"] == "b" * 16
