"""parse_iso: the one reader of ISO 8601 dates in settings, tokens and Graph messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from relay.events.model import parse_iso


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T10:00:00", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        (
            "2026-11-24T12:00:00+02:00",
            datetime(2026, 11, 24, 12, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("", None),
        ("yesterday", None),
        (None, None),
        (1700000000, None),
    ],
)
def test_parse_iso(value: object, expected: datetime | None) -> None:
    assert parse_iso(value) == expected
