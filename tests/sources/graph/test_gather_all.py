"""gather_all: the first failure stops the other Graph requests and is raised as is."""

from __future__ import annotations

import asyncio

import pytest

from relay.sources.graph.client import gather_all


async def test_results_in_order() -> None:
    async def value(n: int) -> int:
        await asyncio.sleep(0.01 * (3 - n))
        return n

    assert await gather_all(value(n) for n in range(3)) == [0, 1, 2]


async def test_first_failure_cancels_the_others_and_is_not_wrapped() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("throttled")

    with pytest.raises(LookupError, match="throttled"):
        await gather_all([slow(), failing()])
    assert cancelled.is_set()
