"""Queries on ``events`` and the fan-out to ``deliveries``.

:func:`record` is the one way an event enters the system: the event row and one delivery
row per matching enabled-or-disabled route are written in the caller's transaction, so an
event is either stored with all its deliveries or not at all. When it queued deliveries, the
delivery worker is woken once that transaction commits (:mod:`relay.store.wakes`); so is the
event stream's sequencer (:mod:`relay.store.stream`), always.

It also settles the two fields of an event that depend on what the store holds, in the same
transaction, just before the payload is serialized:

- ``messageNew``'s ``seemsLikeNew`` (:func:`seems_like_new`): IMAP's sink and Graph's
  watcher both store their events here, so deciding it here covers both backends in one
  place, and inside the transaction that stores the event: an event that is rolled back
  (a lost compare-and-set, a crash) leaves its message unseen, and one that is stored marks
  it seen exactly once, so a message is never reported as new twice nor as seen before it
  was reported.
- ``messageBounce``'s ``sentQueueId`` (:func:`sent_queue_ids`): the outbox queue id of
  the bounced message when it went out through the relay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, literal_column, select, true
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.events.fit import fit_payload
from relay.events.model import Event
from relay.events.routing import route_matches
from relay.store import dialect, wakes
from relay.store.compiled import ManyRows, RowsTable, Statement
from relay.store.deliveries import new_delivery
from relay.store.engine import Wake, now_ms
from relay.store.schema import (
    DeliveryStatus,
    deliveries,
    events,
    outbox,
    seen_messages,
    settings,
    webhook_routes,
)

DEFAULT_MAX_BYTES = 256 * 1024


def key_hash(key: str) -> int:
    """A message key as the signed 64-bit integer ``seen_messages`` stores (BLAKE2b)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# Adds seen-message keys; returns the ones that were not there yet.
_ADD_SEEN = RowsTable(
    {"account": seen_messages.c.account.type, "key_hash": seen_messages.c.key_hash.type},
    lambda v, name: (
        dialect.insert_for(name, seen_messages)
        .from_select(["account", "key_hash"], select(v.c.account, v.c.key_hash).where(true()))
        .on_conflict_do_nothing(index_elements=["account", "key_hash"])
        .returning(seen_messages.c.account, seen_messages.c.key_hash)
    ),
)


async def seems_like_new(conn: AsyncConnection, batch: Sequence[Event]) -> None:
    """Add the keys (:attr:`Event.seen_key`) of the ``messageNew`` events of ``batch`` to
    their accounts' sets of seen messages; ``seemsLikeNew`` becomes false (in place) where
    the key was there already, or comes earlier in ``batch``."""
    first: dict[tuple[str, int], Event] = {}
    for event in batch:
        if event.event != "messageNew" or event.seen_key is None or event.account is None:
            continue
        key = (event.account, key_hash(event.seen_key))
        if key in first:
            event.data["seemsLikeNew"] = False
        else:
            first[key] = event
    # ON CONFLICT DO NOTHING ... RETURNING answers with the rows it inserted: a key another
    # transaction holds waits for it (PostgreSQL), so two racing writers cannot both find a
    # message new.
    found = await _ADD_SEEN.rows(conn, list(first))
    added = {(str(account), int(value)) for account, value in found}
    for key, event in first.items():
        if key not in added:
            event.data["seemsLikeNew"] = False


async def sent_queue_ids(conn: AsyncConnection, batch: Sequence[Event]) -> None:
    """Add ``sentQueueId`` (in place) to the ``messageBounce`` events of ``batch`` whose
    original (``messageId``) the account sent through the outbox: the newest such entry."""
    for event in batch:
        message_id = event.data.get("messageId") if event.event == "messageBounce" else None
        if not message_id or event.account is None:
            continue
        queue_id = await conn.scalar(
            select(outbox.c.queue_id)
            .where(outbox.c.account == event.account, outbox.c.message_id == str(message_id))
            .order_by(outbox.c.seq.desc())
            .limit(1)
        )
        if queue_id is not None:
            event.data["sentQueueId"] = str(queue_id)


_SERVICE_URL = Statement(
    lambda _: select(settings.c.value).where(settings.c.key == literal_column("'serviceUrl'"))
)


async def service_url(conn: AsyncConnection, default: str) -> str:
    """The ``serviceUrl`` of envelopes: the API setting when one is stored, else the config.

    Read on every :func:`record`, so as a compiled statement (relay.store.compiled).
    """
    rows = await _SERVICE_URL.rows(conn)
    stored = _json(conn, rows[0][0]) if rows else None
    return str(stored).rstrip("/") if stored else default


_EVENT_COLUMNS = ("id", "account", "event", "created_ms", "payload", "path")
_INSERT_EVENTS = ManyRows(
    {name: events.c[name].type for name in _EVENT_COLUMNS},
    one=lambda: events.insert().values({c: bindparam(c) for c in _EVENT_COLUMNS}),
    all=lambda v: events.insert().from_select(list(_EVENT_COLUMNS), select(*v.c)),
)
# A new delivery: lane 0, no attempt yet, due now.
_INSERT_DELIVERIES = ManyRows(
    {
        "route_id": deliveries.c.route_id.type,
        "event_id": deliveries.c.event_id.type,
        "status": deliveries.c.status.type,
        "ms": deliveries.c.created_ms.type,
    },
    one=lambda: deliveries.insert().values(new_delivery(bindparam("ms"))),
    all=lambda v: deliveries.insert().from_select(
        [
            "route_id",
            "event_id",
            "status",
            "lane",
            "attempts",
            "next_attempt_ms",
            "created_ms",
            "updated_ms",
        ],
        select(
            v.c.route_id,
            v.c.event_id,
            v.c.status,
            literal_column("0"),
            literal_column("0"),
            v.c.ms,
            v.c.ms,
            v.c.ms,
        ),
    ),
)
_ROUTE_COLUMNS = (webhook_routes.c.id, webhook_routes.c.events, webhook_routes.c.accounts)
_ROUTES = Statement(lambda _: select(*_ROUTE_COLUMNS))


def _json(conn: AsyncConnection, value: Any) -> Any:
    """A JSON column as driver SQL reads it: text on SQLite; on PostgreSQL already decoded
    (by the codec SQLAlchemy gives asyncpg connections)."""
    if conn.dialect.name == "sqlite" and isinstance(value, str):
        return json.loads(value)
    return value


async def _insert(
    conn: AsyncConnection, batch: Sequence[Event], default_service_url: str, max_bytes: int
) -> list[str]:
    """Settle the fields that depend on the store, then insert ``batch``; the payloads stored
    (the exact text a delivery signs), in ``batch``'s order. The stream's sequencer gives the
    events their positions once the transaction commits."""
    await seems_like_new(conn, batch)
    await sent_queue_ids(conn, batch)
    base = await service_url(conn, default_service_url)
    payloads = [fit_payload(e.envelope(base), max_bytes) for e in batch]
    await _INSERT_EVENTS.run(
        conn,
        [
            (e.id, e.account, e.event, e.created_ms, payload, e.path)
            for e, payload in zip(batch, payloads, strict=True)
        ],
    )
    wakes.wake_on_commit(conn, Wake.EVENTS)
    return payloads


async def record(
    conn: AsyncConnection,
    batch: Sequence[Event],
    *,
    default_service_url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Store ``batch`` and queue a delivery for every route that wants each event."""
    if not batch:
        return []
    await _insert(conn, batch, default_service_url, max_bytes)
    ms = now_ms()
    # Each route's JSON decoded once per batch, not once per event.
    routes = [(r[0], _json(conn, r[1]), _json(conn, r[2])) for r in await _ROUTES.rows(conn)]
    pending = DeliveryStatus.PENDING
    rows = [
        (route_id, e.id, pending, ms)
        for e in batch
        for route_id, route_events, route_accounts in routes
        if route_matches(route_events, route_accounts, e.event, e.account)
    ]
    if rows:
        await _INSERT_DELIVERIES.run(conn, rows)
        wakes.wake_on_commit(conn, Wake.DELIVERIES)
    return [e.id for e in batch]


async def record_alone(
    conn: AsyncConnection,
    event: Event,
    *,
    default_service_url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Store ``event`` without queueing any delivery (the caller queues the one it wants: a
    test delivery to one route); the payload stored."""
    (payload,) = await _insert(conn, [event], default_service_url, max_bytes)
    return payload


async def append(conn: AsyncConnection, event: Event, service_url: str) -> str:
    """Store one event (with its deliveries) inside the caller's transaction."""
    (event_id,) = await record(conn, [event], default_service_url=service_url)
    return event_id


async def for_account(conn: AsyncConnection, account: str) -> Sequence[RowMapping]:
    rows = await conn.execute(
        select(events).where(events.c.account == account).order_by(events.c.seq)
    )
    return rows.mappings().all()


async def recent(conn: AsyncConnection, account: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` events of ``account``, newest first: id, event, time, path and
    the envelope's ``data`` (as stored; for the admin UI)."""
    result = await conn.execute(
        select(events.c.id, events.c.event, events.c.created_ms, events.c.path, events.c.payload)
        .where(events.c.account == account)
        .order_by(events.c.seq.desc())
        .limit(limit)
    )
    out = []
    for row in result.mappings().all():
        data = json.loads(row["payload"]).get("data")
        out.append(
            {
                "id": row["id"],
                "event": row["event"],
                "created_ms": row["created_ms"],
                "path": row["path"],
                "data": data if isinstance(data, dict) else {},
            }
        )
    return out
