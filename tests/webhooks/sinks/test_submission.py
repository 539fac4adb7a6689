"""A publisher answers each submission with one future: every message's answer in order,
confirmations and refusals side by side; submissions go out in the order made; messages of a
submission nobody waits for any more are not published."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from relay.webhooks.sink_targets import REDIS, SinkOptions, parse_broker_url
from relay.webhooks.sinks.base import Pending, Publisher, SinkFailed, SinkMessage
from relay.webhooks.ssrf import AddressPolicy


class Recording(Publisher):
    """Confirms every message but those whose event is "refused"; records what it sent."""

    def __init__(self) -> None:
        super().__init__(
            parse_broker_url(REDIS, "redis://127.0.0.1:6379/0"),
            AddressPolicy.from_networks(("127.0.0.0/8",)),
            timeout=5.0,
        )
        self.sent: list[str] = []
        self.open = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def _connect(self, address: str) -> None:
        self.open = True

    async def _disconnect(self) -> None:
        self.open = False

    def _connected(self) -> bool:
        return self.open

    async def _publish(self, batch: Sequence[Pending]) -> None:
        await self.gate.wait()
        for pending in batch:
            self.sent.append(pending.message.event_id)
            if pending.message.event == "refused":
                pending.fail("refused by the broker")
            else:
                pending.confirm(f"entry {pending.message.event_id}")


def _message(event_id: str, event: str = "messageNew") -> SinkMessage:
    return SinkMessage(
        route_id="r",
        options=SinkOptions(stream="s"),
        event_id=event_id,
        event=event,
        account="a",
        timestamp=1,
        body=b"{}",
        headers={},
    )


async def test_one_future_answers_every_message_in_order() -> None:
    publisher = Recording()
    try:
        answers = await publisher.submit([_message("1"), _message("2", "refused"), _message("3")])
    finally:
        await publisher.close()
    assert answers[0] == "entry 1"
    assert isinstance(answers[1], SinkFailed)
    assert str(answers[1]) == "refused by the broker"
    assert answers[2] == "entry 3"
    assert await Recording().submit([]) == []


async def test_submissions_go_out_in_order_and_abandoned_ones_are_skipped() -> None:
    publisher = Recording()
    publisher.gate.clear()
    try:
        first = publisher.submit([_message("1"), _message("2")])
        await asyncio.sleep(0)  # the first batch is taken and waits at the gate
        abandoned = publisher.submit([_message("3")])
        last = publisher.submit([_message("4"), _message("5")])
        abandoned.cancel()
        publisher.gate.set()
        assert await first == ["entry 1", "entry 2"]
        assert await last == ["entry 4", "entry 5"]
    finally:
        await publisher.close()
    assert publisher.sent == ["1", "2", "4", "5"]


async def test_a_closed_publisher_fails_what_is_submitted() -> None:
    publisher = Recording()
    await publisher.close()
    (answer,) = await publisher.submit([_message("1")])
    assert isinstance(answer, SinkFailed)
    assert "shutting down" in str(answer)
