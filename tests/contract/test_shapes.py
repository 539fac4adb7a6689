"""The shape checker: required and optional fields, types, nesting; extra fields allowed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.shapes import EVENTS, ISO, MapOf, OneOf, event_shape, problems

SHAPE = {
    "id": str,
    "uid": int,
    "date": ISO,
    "flags": [str],
    "from": {"name": str, "address": str},
    "headers?": MapOf([str]),
    "specialUse?": OneOf(str, False),
}
GOOD = {
    "id": "AAAA",
    "uid": 7,
    "date": "2024-05-01T10:00:00.000Z",
    "flags": ["\\Seen"],
    "from": {"name": "Ann", "address": "a@example.com"},
}


def test_a_matching_value_with_extra_fields_passes() -> None:
    """Fields the shape does not name are allowed; optional fields may be missing."""
    assert problems(SHAPE, {**GOOD, "ours": {"anything": 1}}) == []
    assert problems(SHAPE, {**GOOD, "headers": {"to": ["a"]}, "specialUse": False}) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id": None}, "id: expected str, got null"),
        ({"uid": "7"}, "uid: expected int, got str"),
        ({"uid": True}, "uid: expected int, got bool"),
        ({"date": "yesterday"}, "date: expected an ISO 8601 date"),
        ({"flags": ["\\Seen", 1]}, "flags[1]: expected str, got int"),
        ({"from": {"name": "Ann"}}, "from.address: missing"),
        ({"from": "a@example.com"}, "from: expected an object, got str"),
        ({"headers": {"to": "a"}}, "headers.to: expected a list, got str"),
        ({"specialUse": True}, "specialUse: expected str | False, got bool"),
        ({"specialUse": None}, "specialUse: expected str | False, got null"),
    ],
)
def test_each_difference_is_named(change: dict[str, Any], expected: str) -> None:
    """A wrong type, a missing required field or a bad optional one names its dotted path."""
    found = problems(SHAPE, {**GOOD, **change})
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_missing_required_fields_are_all_reported() -> None:
    """Every missing required field is reported, not only the first."""
    assert problems(SHAPE, {"flags": []}) == [
        "id: missing",
        "uid: missing",
        "date: missing",
        "from: missing",
    ]


def test_the_envelope_is_checked_and_names_the_event() -> None:
    """The webhook envelope needs account, date, event (this one) and data."""
    payload = {
        "serviceUrl": "https://relay.example.com",
        "account": "a",
        "date": "2024-05-01T10:00:00.000Z",
        "event": "accountAdded",
        "data": {"account": "a"},
    }
    assert problems(event_shape("accountAdded"), payload) == []
    wrong = {**payload, "event": "accountDeleted", "data": {}}
    assert problems(event_shape("accountAdded"), wrong) == [
        "event: expected 'accountAdded', got str 'accountDeleted'",
        "data.account: missing",
    ]


def test_every_event_has_a_shape() -> None:
    """The events of the contract tests, and those their own engineers add tests for."""
    assert {
        "messageNew",
        "messageDeleted",
        "messageUpdated",
        "messageSent",
        "messageDeliveryError",
        "messageFailed",
        "mailboxReset",
        "authenticationError",
        "authenticationSuccess",
        "connectError",
        "accountAdded",
        "accountInitialized",
        "accountDeleted",
        "messageBounce",
        "messageComplaint",
        "mailboxNew",
        "mailboxDeleted",
    } <= set(EVENTS)
