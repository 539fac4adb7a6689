"""The Graph emulator's pure rules: retry schedule, slow endpoints, resources, paths."""

from __future__ import annotations

import pytest

from relay.sandbox.graph.errors import GraphError
from relay.sandbox.graph.notifier import (
    HEALTH_WINDOW,
    PENALTY,
    RETRY_HORIZON,
    EndpointHealth,
    next_retry,
)
from relay.sandbox.graph.odata import Segment, fold_keys, parse_datetime, split_path
from relay.sandbox.graph.subscriptions import Target, check_expiration, parse_resource


@pytest.mark.parametrize(
    ("attempts", "now", "due"),
    [
        (1, 0.0, 10.0),
        (2, 10.0, 70.0),
        (3, 70.0, 370.0),
        (4, 370.0, 1270.0),
        (5, 1270.0, 3070.0),
        (6, 3070.0, 6670.0),
        (7, 6670.0, 10270.0),
        (8, 10270.0, 13870.0),
        (9, 13870.0, None),
    ],
)
def test_retry_schedule(attempts: int, now: float, due: float | None) -> None:
    """Retries after 10 s, 1, 5, 15, 30 min, then hourly, within 4 hours of the first try."""
    assert next_retry(0.0, attempts, now) == due


def test_retry_horizon_is_four_hours() -> None:
    """Nothing is retried more than four hours after the first attempt."""
    assert RETRY_HORIZON == 4 * 3600
    assert next_retry(0.0, 8, RETRY_HORIZON - 3600) == RETRY_HORIZON
    assert next_retry(0.0, 8, RETRY_HORIZON - 3599) is None


@pytest.mark.parametrize(
    ("slow", "fast", "mode"),
    [
        (0, 10, "normal"),
        (9, 0, "normal"),
        (1, 10, "normal"),
        (1, 9, "delayed"),
        (3, 17, "dropping"),
        (2, 18, "delayed"),
        (2, 8, "dropping"),
    ],
)
def test_slow_share_decides_the_mode(slow: int, fast: int, mode: str) -> None:
    """>= 10 % slow answers (of at least 10) delays, >= 15 % drops."""
    health = EndpointHealth()
    for _ in range(fast):
        health.record(0.0, 0.5)
    for _ in range(slow):
        health.record(0.0, 3.0)

    assert health.mode(1.0) == mode


def test_penalties_and_window_expire() -> None:
    """A delay period lasts 10 minutes; answers older than the window stop counting."""
    health = EndpointHealth()
    health.record(0.0, 2.95)
    for _ in range(9):
        health.record(0.0, 2.9)

    assert health.mode(0.0) == "delayed"
    assert health.mode(PENALTY) == "normal"
    assert health.slow_share(1.0) == 0.1
    assert health.slow_share(HEALTH_WINDOW) == 0.0


@pytest.mark.parametrize(
    ("resource", "target"),
    [
        ("me/messages", Target(None, None)),
        ("/me/mailFolders('Inbox')/messages", Target(None, "Inbox")),
        ("me/mailfolders/inbox/messages", Target(None, "inbox")),
        ("users/a@example.com/messages", Target("a@example.com", None)),
        ("Users/a%40example.com/Messages", Target("a@example.com", None)),
        ("users('id-1')/mailFolders('AQMkx=')/messages", Target("id-1", "AQMkx=")),
        ("users/id-1/mailFolders/sentitems/messages", Target("id-1", "sentitems")),
    ],
)
def test_subscription_resources(resource: str, target: Target) -> None:
    """Every documented spelling of a message resource names a user and maybe a folder."""
    assert parse_resource(resource) == target


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "me",
        "me/events",
        "me/messages/abc",
        "users/messages",
        "me/mailFolders/messages",
        "me/mailFolders('inbox')/childFolders",
        "me/messages?$filter=isRead eq false",
        "groups/x/messages",
    ],
)
def test_unsupported_resources(resource: str) -> None:
    """Other resources are 400 InvalidRequest."""
    with pytest.raises(GraphError) as raised:
        parse_resource(resource)
    assert (raised.value.status, raised.value.code) == (400, "InvalidRequest")


def test_expiration_limits() -> None:
    """Up to 10,070 minutes ahead is fine; one second more, or the past, is not."""
    check_expiration(10070 * 60.0, 0.0)
    with pytest.raises(GraphError, match="10070 minutes"):
        check_expiration(10070 * 60.0 + 1, 0.0)
    with pytest.raises(GraphError, match="in the future"):
        check_expiration(0.0, 0.0)


def test_split_path() -> None:
    """Segments are decoded one by one; keys and calls are recognized; // is ignored."""
    assert split_path("/v1.0//users/a%40b.com/mailFolders('Inbox')/messages/delta()") == [
        Segment("v1.0", "v1.0"),
        Segment("users", "users"),
        Segment("a@b.com", "a@b.com"),
        Segment("mailfolders", "mailFolders", key="Inbox"),
        Segment("messages", "messages"),
        Segment("delta", "delta", call=True),
    ]
    assert split_path("users('o''brien@x.com')")[0].key == "o'brien@x.com"


def test_fold_keys_and_dates() -> None:
    """Bodies are matched case-insensitively; dates may carry seven fractional digits."""
    assert fold_keys({"Message": {"ToRecipients": [{"EmailAddress": {}}]}}) == {
        "message": {"torecipients": [{"emailaddress": {}}]}
    }
    assert parse_datetime("1970-01-01T00:01:00.1234567Z", "x") == pytest.approx(60.123456)
    assert parse_datetime("1970-01-01T01:00:00+01:00", "x") == 0.0
    assert parse_datetime("1970-01-01T00:00:10", "x") == 10.0
