"""When to try a failed delivery again (pure: the clock and the randomness are arguments).

A schedule lists the seconds to wait before each attempt; attempt 1 goes out at once. The
default spreads ten attempts over about three days, so a receiver that is down for a weekend
still gets its events.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime

# Seconds before attempt n (index n - 1): now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)

_DELTA_SECONDS = re.compile(r"[+-]?\d+(\.\d+)?")


def next_attempt(
    schedule: Sequence[float],
    attempt: int,
    now: float,
    retry_after: float | None = None,
    *,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
    max_retry_after: float = 3600,
) -> float | None:
    """Epoch seconds of the next attempt after ``attempt`` attempts were made, or None.

    None means the schedule is exhausted. The scheduled delay gets ±``jitter`` (a fraction)
    so that deliveries failing together do not retry together. ``retry_after`` (seconds, from
    the receiver's ``Retry-After``) is a lower bound on the wait, itself capped at
    ``max_retry_after`` so a receiver cannot park a delivery for days.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts attempts already made and starts at 1, got {attempt}")
    if attempt >= len(schedule):
        return None
    delay = max(0.0, float(schedule[attempt]))
    delay *= 1 + jitter * (2 * rand() - 1)
    if retry_after is not None:
        delay = max(delay, min(max(0.0, retry_after), max_retry_after))
    return now + delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date).

    Returns None for a missing or unreadable value, 0 for one in the past or negative.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return max(0.0, float(value))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000" parses naive; HTTP dates are always UTC
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
