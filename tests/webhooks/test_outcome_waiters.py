"""The registry that wakes ``POST /v1/webhooks/{id}/test`` when its outcome is recorded."""

from __future__ import annotations

import asyncio

import pytest

from relay.store.deliveries import Outcome
from relay.webhooks.outcome_waiters import OutcomeWaiters

ONE = ("event-1", "route-a")
SAME_EVENT_OTHER_ROUTE = ("event-1", "route-b")
OTHER = ("event-2", "route-a")


def _outcome(seq: int) -> Outcome:
    return Outcome(seq, "route-a", 1, 0, 5, 204, None, None, "delivered")


async def test_resolve_wakes_only_the_waiters_of_those_deliveries() -> None:
    """Resolving deliveries wakes every waiter of those, none of another delivery (the same
    event to another route included), and forgets them."""
    waiters = OutcomeWaiters()
    first, again = waiters.register(ONE), waiters.register(ONE)
    sibling, other = waiters.register(SAME_EVENT_OTHER_ROUTE), waiters.register(OTHER)
    waiters.resolve([(ONE, _outcome(1)), (("event-3", "route-a"), _outcome(3))])
    assert first.result() == _outcome(1)
    assert again.result() == _outcome(1)
    assert not sibling.done()
    assert not other.done()
    assert len(waiters) == 2
    waiters.resolve([(SAME_EVENT_OTHER_ROUTE, _outcome(2)), (OTHER, _outcome(4))])
    assert sibling.result() == _outcome(2)
    assert other.result() == _outcome(4)
    assert len(waiters) == 0


async def test_discard_cancels_and_forgets() -> None:
    """A waiter that stops waiting (timed out) is cancelled and leaves nothing behind; a
    later outcome of its delivery is harmless."""
    waiters = OutcomeWaiters()
    waiter = waiters.register(ONE)
    kept = waiters.register(ONE)
    waiters.discard(ONE, waiter)
    assert waiter.cancelled()
    assert len(waiters) == 1
    waiters.discard(ONE, kept)
    waiters.discard(ONE, kept)  # twice: nothing left to forget
    assert len(waiters) == 0
    waiters.resolve([(ONE, _outcome(1))])
    assert kept.cancelled()


async def test_waiting_block_always_unregisters() -> None:
    """``waiting`` registers for the block only, whether it ends by timeout, an error or
    an outcome."""
    waiters = OutcomeWaiters()
    with waiters.waiting(ONE) as waiter:
        assert len(waiters) == 1
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await waiter
    assert len(waiters) == 0
    with pytest.raises(RuntimeError), waiters.waiting(ONE):
        raise RuntimeError("the transaction failed")
    assert len(waiters) == 0
    with waiters.waiting(OTHER) as waiter:
        waiters.resolve([(OTHER, _outcome(4))])
        assert (await waiter).seq == 4
    assert len(waiters) == 0
