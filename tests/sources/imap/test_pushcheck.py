"""The push check's schedule (relay.sources.imap.pushcheck.plan): pure, no I/O."""

from __future__ import annotations

import itertools

import pytest

from relay.sources.imap.pushcheck import Plan, plan


@pytest.mark.parametrize(
    ("now", "seen", "interval", "round_at", "expected"),
    [
        # Not yet due: wake when it is.
        (100.0, 50.0, 60.0, None, Plan(check=False, round=False, wake_at=110.0)),
        # Due exactly, and later.
        (110.0, 50.0, 60.0, None, Plan(check=True, round=False, wake_at=110.0)),
        (500.0, 50.0, 60.0, None, Plan(check=True, round=False, wake_at=110.0)),
        # A push or sync just now: the next check is a whole interval away.
        (100.0, 100.0, 60.0, None, Plan(check=False, round=False, wake_at=160.0)),
        # Turned off: never checks; nothing to wake for without a poller.
        (1e9, 0.0, 0.0, None, Plan(check=False, round=False, wake_at=None)),
        (1e9, 0.0, 0.0, 120.0, Plan(check=False, round=True, wake_at=120.0)),
        (100.0, 0.0, 0.0, 120.0, Plan(check=False, round=False, wake_at=120.0)),
        # A round due well before the check runs alone (the check is not early).
        (90.0, 50.0, 60.0, 90.0, Plan(check=False, round=True, wake_at=90.0)),
        (80.0, 50.0, 60.0, 94.9, Plan(check=False, round=False, wake_at=94.9)),
        # A round due less than a quarter interval before the check waits for it.
        (95.0, 50.0, 60.0, 95.0, Plan(check=False, round=False, wake_at=110.0)),
        (109.9, 50.0, 60.0, 109.0, Plan(check=False, round=False, wake_at=110.0)),
        (110.0, 50.0, 60.0, 109.0, Plan(check=True, round=True, wake_at=110.0)),
        # The check is due and the round would need a break of its own before the next
        # check: it runs now, with the check.
        (110.0, 50.0, 60.0, 125.0, Plan(check=True, round=True, wake_at=110.0)),
        (110.0, 50.0, 60.0, 169.0, Plan(check=True, round=True, wake_at=110.0)),
        # A round not due before the next check waits for its own time.
        (110.0, 50.0, 60.0, 170.0, Plan(check=True, round=False, wake_at=110.0)),
        (110.0, 50.0, 60.0, 400.0, Plan(check=True, round=False, wake_at=110.0)),
        # Both due.
        (110.0, 50.0, 60.0, 110.0, Plan(check=True, round=True, wake_at=110.0)),
        (130.0, 50.0, 60.0, 90.0, Plan(check=True, round=True, wake_at=90.0)),
    ],
)
def test_plan(
    now: float, seen: float, interval: float, round_at: float | None, expected: Plan
) -> None:
    """When the check and the round run, and when the next IDLE ends."""
    assert plan(now, seen=seen, interval=interval, round_at=round_at) == expected


def _simulate(
    interval: float, round_every: float, pushes: list[float], until: float
) -> dict[str, list[float]]:
    """A listener's breaks over time (each action takes no time), with pushes at the given
    moments; returns when the checks, the rounds and the IDLE breaks happened."""
    now, seen, round_at = 0.0, 0.0, 0.0
    checks: list[float] = []
    rounds: list[float] = []
    breaks: list[float] = []
    pending = sorted(pushes)
    while now < until:
        todo = plan(now, seen=seen, interval=interval, round_at=round_at)
        if todo.check:
            checks.append(now)
            seen = now
        if todo.round:
            rounds.append(now)
            round_at = now + round_every
        wake = plan(now, seen=seen, interval=interval, round_at=round_at).wake_at
        assert wake is not None
        assert wake > now
        if pending and pending[0] < wake:
            now = seen = pending.pop(0)  # a push: handled at once, shows the folder current
            continue
        now = wake
        breaks.append(now)
    return {"checks": checks, "rounds": rounds, "breaks": breaks}


def test_checks_at_most_once_per_interval_and_share_the_rounds_breaks() -> None:
    """Over an hour with pushes now and then: checks never come closer than the interval,
    rounds at most a quarter interval later than their poll interval, and every check
    shares a round's IDLE break (two breaks a minute, as without checks)."""
    pushes = [130.5, 1000.25, 1010.0, 2222.0, 2230.0]
    run = _simulate(60.0, 30.0, pushes, 3600.0)
    checks, rounds = run["checks"], run["rounds"]
    assert all(b - a >= 60.0 for a, b in itertools.pairwise(checks))
    assert all(b - a <= 30.0 + 15.0 for a, b in itertools.pairwise(rounds))
    assert len(checks) >= 55
    assert [c for c in checks if c not in rounds] == []
    assert len(run["breaks"]) <= 2 * 60 + 1


def test_no_pushes_checks_every_interval() -> None:
    """A folder that never changes is checked exactly once per interval."""
    run = _simulate(60.0, 3600.0, [], 600.0)
    assert run["checks"] == [60.0 * n for n in range(1, 10)]
