"""The GCRA rate limiter, with an injected clock."""

from __future__ import annotations

import pytest

from relay.auth.ratelimit import RateLimiter


def run(limit: int, window: float, times: list[float]) -> list[bool]:
    limiter = RateLimiter()
    return [limiter.hit("t", limit, window, now).admitted for now in times]


@pytest.mark.parametrize(
    ("limit", "window", "times", "admitted"),
    [
        # A burst of the whole quota at one instant, then nothing until one interval passed.
        (3, 3.0, [0, 0, 0, 0], [True, True, True, False]),
        (3, 3.0, [0, 0, 0, 0.99, 1.0], [True, True, True, False, True]),
        # Spread out at exactly the rate: never refused.
        (2, 1.0, [0, 0.5, 1.0, 1.5, 2.0, 2.5], [True] * 6),
        # Faster than the rate after the burst: every other one.
        (2, 1.0, [0, 0, 0.25, 0.5, 0.75, 1.0], [True, True, False, True, False, True]),
        # A quiet window restores the whole burst.
        (2, 10.0, [0, 0, 0, 20, 20, 20], [True, True, False, True, True, False]),
        # A limit of one.
        (1, 60.0, [0, 30, 59.9, 60], [True, False, False, True]),
        # Intervals that are not exact in binary floating point.
        (10, 1.0, [0.0] * 11, [True] * 10 + [False]),
        (7, 0.3, [5.0] * 8, [True] * 7 + [False]),
    ],
)
def test_admits_at_most_the_limit(
    limit: int, window: float, times: list[float], admitted: list[bool]
) -> None:
    """Requests are admitted up to the burst and then at the configured rate."""
    assert run(limit, window, times) == admitted


@pytest.mark.parametrize(
    ("hits", "remaining", "reset", "retry_after"),
    [
        (1, "9", "1", None),  # 0.1 s of quota used: reset rounds up to 1
        (5, "5", "1", None),
        (10, "0", "1", None),
        (11, "0", "1", "1"),  # refused: Retry-After 0.1 s rounds up to at least 1
    ],
)
def test_headers(hits: int, remaining: str, reset: str, retry_after: str | None) -> None:
    """RateLimit-* headers count down; a refusal adds Retry-After in whole seconds >= 1."""
    limiter = RateLimiter()
    for _ in range(hits):
        decision = limiter.hit("t", 10, 1.0, 100.0)
    headers = decision.headers()
    assert headers["RateLimit-Limit"] == "10"
    assert headers["RateLimit-Remaining"] == remaining
    assert headers["RateLimit-Reset"] == reset
    assert headers.get("Retry-After") == retry_after


def test_retry_after_is_when_the_next_request_passes() -> None:
    """A refused request may retry after Retry-After seconds and is then admitted."""
    limiter = RateLimiter()
    for _ in range(4):
        limiter.hit("t", 4, 60.0, 0.0)
    refused = limiter.hit("t", 4, 60.0, 1.0)
    assert not refused.admitted
    assert refused.retry_after_s == pytest.approx(14.0)
    assert refused.headers()["Retry-After"] == "14"
    assert refused.headers()["RateLimit-Reset"] == "59"
    assert not limiter.hit("t", 4, 60.0, 14.9).admitted
    assert limiter.hit("t", 4, 60.0, 15.0).admitted


def test_keys_are_independent() -> None:
    """One token's requests do not count against another's."""
    limiter = RateLimiter()
    assert limiter.hit("a", 1, 10.0, 0.0).admitted
    assert not limiter.hit("a", 1, 10.0, 0.0).admitted
    assert limiter.hit("b", 1, 10.0, 0.0).admitted


def test_idle_keys_are_forgotten() -> None:
    """Keys whose quota is whole again are dropped, so memory follows active tokens only."""
    limiter = RateLimiter()
    for n in range(100):
        limiter.hit(f"k{n}", 5, 1.0, 0.0)
    assert len(limiter) == 100
    limiter.hit("late", 5, 1.0, 120.0)
    assert len(limiter) == 1
