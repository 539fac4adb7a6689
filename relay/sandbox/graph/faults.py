"""Graph outages on demand: 503, 504, a request that hangs, a connection reset.

Microsoft Graph has routine bad moments: ``503 Service Unavailable`` (``serviceNotAvailable``,
sometimes with ``Retry-After``), ``504 Gateway Timeout`` from its gateway, requests that get
no answer at all, and connections that are cut. The admin API switches these on for the
requests of chosen mailboxes and paths (:class:`Faults`); the routes ask :meth:`Faults.take`
whether a request is hit and act it out.

Pure bookkeeping, like :mod:`relay.sandbox.graph.throttling`: nothing here does I/O except
the event that a hung request waits on, which is set when its fault is removed.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

# What a fault does to a request it hits.
UNAVAILABLE = "unavailable"  # 503 serviceNotAvailable
GATEWAY_TIMEOUT = "gatewayTimeout"  # 504 from Graph's gateway
HANG = "hang"  # no answer until the fault is removed or HOLD_MAX passes (then 504)
RESET = "reset"  # the TCP connection is reset, nothing is answered
KINDS = (UNAVAILABLE, GATEWAY_TIMEOUT, HANG, RESET)
# Seconds a hung request is held at most; then Graph's gateway answers it 504.
HOLD_MAX = 120.0
# The kinds that answer, and may carry Retry-After.
ANSWERING = (UNAVAILABLE, GATEWAY_TIMEOUT)
# Status, error code and message of the answering kinds (and of a hang that is let go).
ANSWERS: dict[str, tuple[int, str, str]] = {
    UNAVAILABLE: (503, "serviceNotAvailable", "Service Unavailable"),
    GATEWAY_TIMEOUT: (504, "UnknownError", ""),
    HANG: (504, "UnknownError", ""),
}


@dataclass
class Fault:
    """Requests to ``mailbox`` (None: any) whose path contains ``path`` (None: any) fail
    as ``kind`` says; ``requests`` more of them (None: every one until the fault is
    removed). A used-up fault stays listed (``requestsLeft`` 0) until it is removed."""

    id: str
    kind: str
    mailbox: str | None = None
    path: str | None = None
    retry_after: int | None = None
    requests: int | None = None
    # How many requests it hit so far.
    hits: int = 0
    # Set when the fault is removed: requests it holds (``hang``) are let go.
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def matches(self, mailbox: str, path: str) -> bool:
        """Whether a request to ``mailbox`` (lower case) for ``path`` is one of this fault's."""
        if self.requests == 0:
            return False
        if self.mailbox is not None and self.mailbox != mailbox:
            return False
        return self.path is None or self.path.lower() in path.lower()

    def to_json(self) -> dict[str, Any]:
        """The admin API's view."""
        return {
            "id": self.id,
            "kind": self.kind,
            "mailbox": self.mailbox,
            "path": self.path,
            "retryAfter": self.retry_after,
            "requestsLeft": self.requests,
            "hits": self.hits,
        }


@dataclass
class Faults:
    """The faults switched on, oldest first."""

    active: dict[str, Fault] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(
        self,
        kind: str,
        *,
        mailbox: str | None = None,
        path: str | None = None,
        retry_after: int | None = None,
        requests: int | None = None,
    ) -> Fault:
        """Switch a fault on."""
        fault = Fault(
            f"fault-{next(self._ids)}",
            kind,
            mailbox=mailbox.lower() if mailbox is not None else None,
            path=path,
            retry_after=retry_after,
            requests=requests,
        )
        self.active[fault.id] = fault
        return fault

    def remove(self, fault_id: str) -> Fault | None:
        """Switch a fault off (requests it holds are let go); None if there is no such one."""
        fault = self.active.pop(fault_id, None)
        if fault is not None:
            fault.released.set()
        return fault

    def clear(self) -> list[Fault]:
        """Switch every fault off (the sandbox does so when it stops)."""
        gone = list(self.active.values())
        for fault in gone:
            self.remove(fault.id)
        return gone

    def take(self, mailbox: str, path: str) -> Fault | None:
        """The first fault that hits this request (and count it), if any."""
        for fault in self.active.values():
            if not fault.matches(mailbox.lower(), path):
                continue
            fault.hits += 1
            if fault.requests is not None:
                fault.requests -= 1
            return fault
        return None
