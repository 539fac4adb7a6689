"""The event envelope every webhook carries (EmailEngine's shape).

``{"serviceUrl", "account", "date", "path", "specialUse", "event", "data"}`` — the serialized
bytes are fixed when the event is stored, and those exact bytes are signed and sent on
every attempt.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES = (
    "messageNew",
    "messageDeleted",
    "messageUpdated",
    "messageSent",
    "messageDeliveryError",
    "messageFailed",
    "messageBounce",
    "messageComplaint",
    "mailboxReset",
    "mailboxNew",
    "mailboxDeleted",
    "accountAdded",
    "accountInitialized",
    "accountDeleted",
    "authenticationError",
    "authenticationSuccess",
    "connectError",
    "test",
)


# EmailEngine's events the relay does not send (yet): a route or webhookEvents list may name
# them, as an integration written for EmailEngine does; they simply never arrive.
EMAILENGINE_ONLY_EVENTS = (
    "messageMissing",
    "trackOpen",
    "trackClick",
    "listSubscribe",
    "listUnsubscribe",
    "exportCompleted",
    "exportFailed",
)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ``2026-11-24T10:00:00.000Z`` (the format of envelope dates)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 date and time as an aware datetime (UTC when it names no zone); None
    when ``value`` is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_event_id() -> str:
    """A UUID version 7 (RFC 9562): 48 bits of Unix time in milliseconds, then 74 random bits.

    Still an opaque UUID to receivers, but ids made later sort later: rows keyed by event id
    go in at the end of their indexes instead of at random places (with version 4 ids, each
    insert dirtied its own page of the ``events.id`` index, and the store's writes slowed as
    the table grew).
    """
    ms = time.time_ns() // 1_000_000
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return str(uuid.UUID(int=value))


@dataclass(frozen=True, slots=True)
class Event:
    """One change, ready to be stored and delivered."""

    event: str
    account: str | None
    data: dict[str, Any]
    created_ms: int
    path: str | None = None
    special_use: str | None = None
    id: str = field(default_factory=new_event_id)
    # messageNew only, not sent: the key of the account's set of seen messages that decides
    # data.seemsLikeNew when the event is stored (relay.events.normalize.message_new).
    seen_key: str | None = None

    def envelope(self, service_url: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "serviceUrl": service_url,
            "account": self.account,
            "date": iso_ms(self.created_ms),
        }
        if self.path is not None:
            body["path"] = self.path
        if self.special_use is not None:
            body["specialUse"] = self.special_use
        body["event"] = self.event
        body["data"] = self.data
        return body

    def payload(self, service_url: str) -> str:
        """The serialized envelope (compact JSON, non-ASCII kept as UTF-8)."""
        return json.dumps(self.envelope(service_url), separators=(",", ":"), ensure_ascii=False)
