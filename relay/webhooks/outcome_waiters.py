"""Waiting for the recorded outcome of one delivery, without polling the store.

``POST /v1/webhooks/{id}/test`` answers with the outcome of its own delivery. The handler
registers the delivery (its event id and route id, known before anything is written, so
the outcome cannot be recorded before the waiter exists), and the
:class:`~relay.webhooks.worker.DeliveryWorker` resolves the deliveries whose outcomes it has
just committed, each with the :class:`~relay.store.deliveries.Outcome` it recorded (what the
store now holds, so the handler need not read it back). A delivery another node attempts
never wakes a waiter here; the handler's timeout, then a read, covers that.

No I/O; everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from relay.store.deliveries import Outcome

__all__ = ["Delivery", "OutcomeWaiters"]

# (event id, route id): one delivery.
Delivery = tuple[str, str]


class OutcomeWaiters:
    """Futures by delivery, resolved when an outcome of that delivery is committed."""

    def __init__(self) -> None:
        self._by_delivery: dict[Delivery, list[asyncio.Future[Outcome]]] = {}

    def __len__(self) -> int:
        """Waiters registered now."""
        return sum(len(waiters) for waiters in self._by_delivery.values())

    def __bool__(self) -> bool:
        """Whether anybody waits at all."""
        return bool(self._by_delivery)

    def __contains__(self, delivery: object) -> bool:
        """Whether somebody waits for an outcome of ``delivery``."""
        return delivery in self._by_delivery

    def register(self, delivery: Delivery) -> asyncio.Future[Outcome]:
        """A future that is resolved when an outcome of ``delivery`` is committed.

        The caller must :meth:`discard` it when it stops waiting (or use :meth:`waiting`).
        """
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._by_delivery.setdefault(delivery, []).append(waiter)
        return waiter

    def discard(self, delivery: Delivery, waiter: asyncio.Future[Outcome]) -> None:
        """Forget ``waiter`` (resolved, timed out or abandoned); cancel it if still pending."""
        waiter.cancel()
        waiters = self._by_delivery.get(delivery)
        if waiters is None:
            return
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiters:
            del self._by_delivery[delivery]

    def resolve(self, recorded: Iterable[tuple[Delivery, Outcome]]) -> None:
        """These outcomes were committed: wake the waiters of their deliveries with them,
        and forget those waiters."""
        for delivery, outcome in recorded:
            for waiter in self._by_delivery.pop(delivery, ()):
                if not waiter.done():
                    waiter.set_result(outcome)

    @contextlib.contextmanager
    def waiting(self, delivery: Delivery) -> Iterator[asyncio.Future[Outcome]]:
        """:meth:`register` for the duration of the block, :meth:`discard` at its end."""
        waiter = self.register(delivery)
        try:
            yield waiter
        finally:
            self.discard(delivery, waiter)
