"""Which webhook routes an event goes to (pure: the store fans events out with it)."""

from __future__ import annotations

from collections.abc import Sequence


def route_matches(
    route_events: Sequence[str],
    route_accounts: Sequence[str] | None,
    event: str,
    account: str | None,
) -> bool:
    """True when a route subscribed to ``route_events`` for ``route_accounts`` wants this event.

    ``test`` events are never fanned out: they go only to the route being tested.
    """
    if event == "test":
        return False
    if "*" not in route_events and event not in route_events:
        return False
    return route_accounts is None or (account is not None and account in route_accounts)
