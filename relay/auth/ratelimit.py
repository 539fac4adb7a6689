"""Per-token rate limits: a GCRA limiter (pure; the clock is passed in).

The generic cell rate algorithm keeps one number per key, the *theoretical arrival time*
(TAT): the moment at which the key's quota would be whole again if no further request came.
A limit of ``n`` requests per ``w`` seconds spaces requests ``T = w / n`` apart and tolerates a
burst of ``n``: a request at ``now`` is admitted when ``TAT - now <= w - T`` and moves the TAT
on by ``T``. So ``n`` requests at one instant are all admitted, the next one waits ``T``.

:meth:`RateLimiter.hit` checks and counts in one synchronous call: on an event loop nothing
runs between the two, so concurrent requests cannot both take the last slot.

The state lives in this process: with several nodes each one counts its own requests, so
a token may make up to ``n`` requests per window on *each* node until the cluster work (#16)
shares the count through the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter"]

# Float steps of T summed n times may overshoot ``w - T`` by a rounding error.
_EPSILON = 1e-9
_SWEEP_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request and what the ``RateLimit-*`` headers say about it."""

    admitted: bool
    limit: int
    remaining: int
    # Seconds until the quota is whole again.
    reset_s: float
    # Seconds until a refused request would be admitted (0 when admitted).
    retry_after_s: float

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-*`` headers (whole seconds, rounded up), and ``Retry-After``
        (at least 1) when refused."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s - _EPSILON)),
        }
        if not self.admitted:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s - _EPSILON)))
        return out


class RateLimiter:
    """GCRA state for many keys (token ids). ``now`` is any monotonic clock in seconds."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._last_sweep = -math.inf

    def __len__(self) -> int:
        return len(self._tat)

    def hit(self, key: str, max_requests: int, window_s: float, now: float) -> Decision:
        """Count one request of ``key`` under ``max_requests`` per ``window_s`` if admitted."""
        self._sweep(now)
        interval = window_s / max_requests
        tolerance = window_s - interval
        tat = max(self._tat.get(key, now), now)
        if tat - now > tolerance + _EPSILON:
            return Decision(
                admitted=False,
                limit=max_requests,
                remaining=0,
                reset_s=tat - now,
                retry_after_s=tat - now - tolerance,
            )
        tat += interval
        self._tat[key] = tat
        remaining = math.floor((window_s - (tat - now)) / interval + _EPSILON)
        return Decision(
            admitted=True,
            limit=max_requests,
            remaining=max(0, remaining),
            reset_s=tat - now,
            retry_after_s=0.0,
        )

    def _sweep(self, now: float) -> None:
        """Forget keys whose quota is whole again (they would start afresh anyway); at most
        once a minute, so a hit stays O(1) on average."""
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
