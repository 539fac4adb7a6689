"""Graph's bad moments: which failures are worth waiting out, and how long to wait.

Microsoft Graph answers ``503`` and ``504`` now and then, requests time out, connections
are reset. None of these says anything about the account: the watcher waits (backoff with
jitter, or ``Retry-After`` when Graph sends one, capped at ``graph.retry_max``) and tries
again, and the account keeps its state. Only an outage that lasts longer than
``graph.outage_grace`` is reported, once: state and event ``connectError``. :class:`Outage`
keeps that account of one watcher; :func:`transient` and :func:`delay` are pure.
"""

from __future__ import annotations

import ssl
import warnings
from dataclasses import dataclass

import httpx

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError

__all__ = ["TRANSIENT_STATUSES", "Outage", "delay", "transient"]

# Graph's "try again later" answers (429 is throttling, handled on its own).
TRANSIENT_STATUSES = frozenset({503, 504})


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a Graph outage to wait out: a 503 or 504 answer (what msgraph's
    own retries left), a request that timed out, a connection that was reset or could not
    be made. A certificate Graph's address does not pass is not: that is configuration."""
    if isinstance(exc, APIError):
        return int(exc.response_status_code or 0) in TRANSIENT_STATUSES
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__cause__ or exc.__context__
        return not isinstance(cause, ssl.SSLCertVerificationError)
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def delay(
    attempt: int, retry_after: float | None, *, low: float, high: float, jitter: float
) -> float:
    """Seconds before try ``attempt + 1`` after ``attempt`` (1, 2, ...) failed in a row:
    ``Retry-After`` when Graph sent one, else ``low`` doubling per attempt; either at most
    ``high``. ``jitter`` (around 1) scales the backoff, not Graph's Retry-After."""
    if retry_after is not None:
        return max(0.0, min(retry_after, high))
    backoff = min(high, low * 2.0 ** min(max(attempt - 1, 0), 32))
    return min(high, backoff * jitter)


@dataclass
class Outage:
    """One run of transient failures of an account's Graph requests, from the first
    (``since``, monotonic seconds) to the next request that works."""

    since: float
    attempts: int = 0
    # Whether connectError was reported for it.
    reported: bool = False

    def report_in(self, now: float, grace: float) -> float | None:
        """Seconds from ``now`` until the outage is to be reported; None once it was."""
        if self.reported:
            return None
        return max(0.0, self.since + grace - now)
