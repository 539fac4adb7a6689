"""The outbox worker's batching: outcomes written together (and the webhook worker woken only
when a route wants their events), claims a round ahead, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.api.keys import STORE
from relay.config import Settings
from relay.store.engine import Wake
from tests.api.helpers import call
from tests.conftest import MakeClient
from tests.peers.receiver import Receiver
from tests.peers.smtp import SmtpPeer
from tests.sources.imap.relay_support import stored_events, wait_events, wait_until
from tests.webhooks.conftest import loopback_settings

from .conftest import ME, PASSWORD, add_password_account, outbox_entry, send_settings, submit

TO = {"to": [{"address": "rita@example.net"}], "subject": "Hello"}

# The database itself refuses to record a message as sent: a real failed write.
_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON outbox"
        " WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'outcome refused'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'outcome refused'; END $$",
        "CREATE TRIGGER refuse_sent BEFORE UPDATE ON outbox FOR EACH ROW"
        " WHEN (NEW.status = 'sent') EXECUTE FUNCTION refuse_sent()",
    ],
}
_ALLOW = {
    "sqlite": ["DROP TRIGGER IF EXISTS refuse_sent"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS refuse_sent ON outbox",
        "DROP FUNCTION IF EXISTS refuse_sent()",
    ],
}


async def _run_sql(client: TestClient, statements: list[str]) -> None:
    async with client.app[STORE].write(notify=False) as conn:
        for sql in statements:
            await conn.exec_driver_sql(sql)


@asynccontextmanager
async def _sent_refused(client: TestClient) -> AsyncIterator[None]:
    """While the block runs, the store refuses to mark a message ``sent``."""
    dialect = client.app[STORE].dialect
    await _run_sql(client, _REFUSE[dialect])
    try:
        yield
    finally:
        await _run_sql(client, _ALLOW[dialect])


async def _statuses(client: TestClient, queue_ids: list[str]) -> list[str]:
    return [(await outbox_entry(client, q))["status"] for q in queue_ids]


async def test_a_failed_outcome_write_is_retried_not_lost(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """Outcomes whose write fails stay claimed and are written once the store takes them: each
    message is recorded sent with one messageSent, and none goes out twice."""
    client = await make_client(send_settings(settings, concurrency=4))
    await add_password_account(client, smtp)
    with capture_logs() as logs:
        async with _sent_refused(client):
            queued = [await submit(client, {**TO, "text": f"n{i}"}) for i in range(3)]
            ids = [q["queueId"] for q in queued]
            await smtp.wait_for(3)

            async def refused() -> bool:
                return any(e["event"] == "recording send outcomes failed; will retry" for e in logs)

            await wait_until(refused, "a failed outcome write")
            assert await _statuses(client, ids) == ["sending"] * 3
        await wait_until(
            lambda: _has_statuses(client, ids, "sent"), "outcomes written after the failure"
        )
    sent = await stored_events(client, "acct", "messageSent")
    assert sorted(e["data"]["queueId"] for e in sent) == sorted(ids)
    assert Counter(r.message_id for r in smtp.received) == Counter(q["messageId"] for q in queued)


async def _has_statuses(client: TestClient, queue_ids: list[str], status: str) -> bool:
    return await _statuses(client, queue_ids) == [status] * len(queue_ids)


async def test_a_message_that_waited_too_long_for_a_slot_goes_back_to_the_queue(
    make_client: MakeClient, settings: Settings
) -> None:
    """A message claimed ahead that waits for a slot longer than its lease allows is queued
    again unattempted, then sent once by a later claim."""
    # The lease leaves 0.4 s over the timeout: a claimed message must start within 0.2 s.
    slow = await SmtpPeer(passwords={ME: PASSWORD}, delay=0.6).start()
    try:
        client = await make_client(send_settings(settings, concurrency=1, timeout=1.0, lease=1.4))
        await add_password_account(client, slow)
        with capture_logs() as logs:
            first = await submit(client, {**TO, "text": "first"})
            second = await submit(client, {**TO, "text": "second"})
            received = await slow.wait_for(2)
            await wait_until(
                lambda: _has_statuses(client, [first["queueId"], second["queueId"]], "sent"),
                "both recorded as sent",
            )
    finally:
        await slow.stop()
    assert [r.message_id for r in received] == [first["messageId"], second["messageId"]]
    given_back = [e for e in logs if e["event"] == "lease too short for an attempt; queued again"]
    assert len(given_back) == 1
    assert (await outbox_entry(client, second["queueId"]))["attemptsMade"] == 1


async def test_shutdown_gives_back_messages_claimed_ahead_unattempted(
    make_client: MakeClient, settings: Settings
) -> None:
    """On shutdown the running attempt finishes; a message claimed ahead, waiting for a slot,
    is not started during the grace period but queued again at once."""
    slow = await SmtpPeer(passwords={ME: PASSWORD}, delay=0.5).start()
    try:
        client = await make_client(send_settings(settings, concurrency=1))
        await add_password_account(client, slow)
        first = await submit(client, {**TO, "text": "first"})
        second = await submit(client, {**TO, "text": "second"})
        # The first is being transferred and the second claimed behind it.
        await wait_until(lambda: _has_statuses(client, [second["queueId"]], "sending"), "claim")
        await wait_until(lambda: _true(slow.attempts >= 1), "the first attempt")
        await client.close()
    finally:
        await slow.stop()
    assert [r.message_id for r in slow.received] == [first["messageId"]]
    # Restarted without the worker, to read the queue as shutdown left it.
    after = await make_client(send_settings(settings, deliver=False))
    assert await _statuses(after, [first["queueId"], second["queueId"]]) == ["sent", "queued"]


async def _true(value: bool) -> bool:
    await asyncio.sleep(0)
    return value


async def test_outcomes_no_route_wants_do_not_wake_the_webhook_worker(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """With no webhook route, writes of outcomes after the first (which looks at the routes)
    leave the webhook worker alone: it would claim for nothing."""
    client = await make_client(send_settings(settings, concurrency=1))
    await add_password_account(client, smtp)
    await submit(client, {**TO, "text": "first"})
    await wait_events(client, "acct", "messageSent")
    wakes: list[None] = []
    client.app[STORE].on_commit(Wake.DELIVERIES, lambda: wakes.append(None))
    for i in range(3):
        await submit(client, {**TO, "text": f"n{i}"})
    await wait_events(client, "acct", "messageSent", count=4)
    assert wakes == []


async def test_outcome_events_reach_a_route_added_while_none_wanted_them(
    make_client: MakeClient, settings: Settings, smtp: SmtpPeer
) -> None:
    """A route that appears after a look that found none still gets the next outcome's event
    at once: the write that finds it wakes the webhook worker (whose poll is an hour away)."""
    quiet = loopback_settings(send_settings(settings), poll_interval=3600.0)
    client = await make_client(quiet)
    await add_password_account(client, smtp)
    await submit(client, {**TO, "text": "before the route"})
    await wait_events(client, "acct", "messageSent")
    async with Receiver(secret="whsec_" + "A" * 44) as rx:
        route = {"url": rx.url, "events": ["messageSent"]}
        created = await call(client, "POST", "/v1/webhooks", route, status=201)
        rx.secret = created["secret"]
        after = await submit(client, {**TO, "text": "after the route"})
        await rx.wait_for(1)
    (delivery,) = rx.accepted()
    body = json.loads(delivery.body)
    assert body["event"] == "messageSent"
    assert body["data"]["messageId"] == after["messageId"]
