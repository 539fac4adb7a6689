"""What an attempt's result means for the delivery (pure).

2xx is success. 3xx is a failure (redirects are never followed: the target was configured,
not discovered). 410 Gone disables the route. 429 and 503 honour ``Retry-After``. Everything
else, including timeouts and connection errors, is retried on the route's schedule until the
schedule runs out; then the delivery is ``failed`` and stays in the log.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.store.schema import DeliveryStatus
from relay.webhooks.retry import next_attempt, parse_retry_after

# A receiver chooses its Location: the log keeps no more of it than this.
_LOCATION_LIMIT = 512


@dataclass(frozen=True, slots=True)
class Verdict:
    result: str  # DeliveryStatus.DELIVERED | PENDING | FAILED
    next_attempt_ms: int | None = None
    disable_route: str | None = None
    error: str | None = None


def judge(
    *,
    status: int | None,
    error: str | None,
    attempt: int,
    schedule: Sequence[float],
    now: float,
    retry_after: str | None = None,
    max_retry_after: float = 3600.0,
    rand: Callable[[], float] | None = None,
    location: str | None = None,
) -> Verdict:
    """Decide the delivery's next state after attempt number ``attempt`` (1-based).

    ``location`` is a 3xx answer's ``Location`` header, named in the error.
    """
    if status is not None and 200 <= status < 300:
        return Verdict(DeliveryStatus.DELIVERED)
    if status == 410:
        return Verdict(
            DeliveryStatus.FAILED,
            disable_route="the receiver answered 410 Gone",
            error="410 Gone: route disabled",
        )
    if status is not None and 300 <= status < 400:
        target = f" to {location[:_LOCATION_LIMIT]}" if location else ""
        error = f"redirect {status}{target} not followed; point the route at the final URL"
    elif status is not None:
        error = error or f"HTTP {status}"
    delay_hint = parse_retry_after(retry_after, now) if status in (429, 503) else None
    at = next_attempt(
        schedule,
        attempt,
        now,
        delay_hint,
        max_retry_after=max_retry_after,
        rand=rand or random.random,
    )
    if at is None:
        return Verdict(DeliveryStatus.FAILED, error=error)
    return Verdict(DeliveryStatus.PENDING, next_attempt_ms=int(at * 1000), error=error)
