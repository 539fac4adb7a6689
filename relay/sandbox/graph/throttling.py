"""Throttling of mailbox requests, and the record of every request each mailbox received.

Microsoft Graph throttles Outlook resources per mailbox: a throttled request is answered
``429 Too Many Requests`` with ``Retry-After`` (seconds) and an error such as
``ApplicationThrottled``. The sandbox throttles on demand: :meth:`Throttling.throttle`
makes the next ``requests`` requests to a mailbox fail that way. Every request to a
mailbox is recorded (the last :data:`LOG_SIZE` of them), so a test can check that a client
waited as long as it was told to.

Pure bookkeeping: the routes decide which requests are mailbox requests and read the time
from the sandbox clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Requests kept per mailbox.
LOG_SIZE = 1000
# Error codes a throttled request may carry, with Graph's messages for them.
CODES: dict[str, str] = {
    "ApplicationThrottled": "Application is over its MailboxConcurrency limit.",
    "MailboxConcurrency": "Application is over its MailboxConcurrency limit.",
    "TooManyRequests": "Please retry again later.",
}
DEFAULT_CODE = "ApplicationThrottled"


@dataclass
class Throttle:
    """``requests`` more requests to a mailbox get 429 with ``Retry-After: retry_after``."""

    requests: int
    retry_after: int
    code: str = DEFAULT_CODE

    @property
    def message(self) -> str:
        """Graph's error message for ``code``."""
        return CODES[self.code]

    def to_json(self) -> dict[str, Any]:
        """The admin API's view."""
        return {"requests": self.requests, "retryAfter": self.retry_after, "code": self.code}


@dataclass(frozen=True)
class RecordedRequest:
    """One request to a mailbox: sandbox-clock time of arrival, what it was, the answer
    (``status`` None: the connection was reset instead), the outage it met if any
    (:mod:`relay.sandbox.graph.faults`)."""

    time: float
    method: str
    path: str
    status: int | None
    retry_after: int | None = None
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The admin API's view; throttled requests, and outages that answer with one,
        carry their ``retryAfter``."""
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "throttled": self.retry_after is not None and self.fault is None,
            "retryAfter": self.retry_after,
            "fault": self.fault,
        }


@dataclass
class Throttling:
    """Pending throttles and recent requests, per mailbox address (lower case)."""

    pending: dict[str, Throttle] = field(default_factory=dict)
    log: dict[str, deque[RecordedRequest]] = field(default_factory=dict)

    def throttle(self, mailbox: str, requests: int, retry_after: int, code: str) -> Throttle:
        """Throttle the next ``requests`` requests to ``mailbox``; replaces an earlier one."""
        throttle = Throttle(requests=requests, retry_after=retry_after, code=code)
        self.pending[mailbox] = throttle
        return throttle

    def clear(self, mailbox: str) -> int:
        """Stop throttling ``mailbox``; returns how many throttled requests were left."""
        left = self.pending.pop(mailbox, None)
        return left.requests if left is not None else 0

    def take(self, mailbox: str) -> Throttle | None:
        """The throttle that applies to this request to ``mailbox`` (and count it), if any."""
        throttle = self.pending.get(mailbox)
        if throttle is None:
            return None
        throttle.requests -= 1
        if throttle.requests <= 0:
            del self.pending[mailbox]
        return throttle

    def record(self, mailbox: str, request: RecordedRequest) -> None:
        """Remember a request to ``mailbox``, forgetting the oldest beyond :data:`LOG_SIZE`."""
        self.log.setdefault(mailbox, deque(maxlen=LOG_SIZE)).append(request)

    def requests(self, mailbox: str) -> list[RecordedRequest]:
        """The requests ``mailbox`` received, oldest first."""
        return list(self.log.get(mailbox, ()))
