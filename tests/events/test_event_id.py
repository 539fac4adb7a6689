"""Event ids: UUID version 7, ordered by the time they were made."""

from __future__ import annotations

import time
import uuid

from relay.events.model import new_event_id


def test_event_id_is_a_version_7_uuid_with_the_time_in_it() -> None:
    """The id parses as an RFC 9562 UUID version 7 whose first 48 bits are now in ms."""
    before = time.time_ns() // 1_000_000
    parsed = uuid.UUID(new_event_id())
    after = time.time_ns() // 1_000_000
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_event_ids_made_later_sort_later_and_never_repeat() -> None:
    """Ids from different milliseconds sort in the order they were made; none repeats."""
    first = new_event_id()
    time.sleep(0.002)
    second = new_event_id()
    assert first < second
    many = {new_event_id() for _ in range(10_000)}
    assert len(many) == 10_000
