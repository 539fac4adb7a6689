"""How an attempt ended, as exceptions the worker sorts in one place, and the retry backoff."""

from __future__ import annotations

from relay.errors import RelayError


class SendFailed(RelayError):
    """An attempt failed. ``code`` is the SMTP reply code or HTTP status, when there was one."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class RetryLater(SendFailed):
    """Transient: a 4xx SMTP reply, a broken connection, Graph 429/5xx, a token refresh failure."""


class PermanentFailure(SendFailed):
    """Final: a 5xx SMTP reply, a Graph 4xx (``ErrorSendAsDenied``), lost consent."""


def retry_delay(attempt: int, *, minimum: float, maximum: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return float(min(maximum, minimum * 2 ** max(0, attempt - 1)))
