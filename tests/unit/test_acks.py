"""The consumer's grouped acks: a multiple ack never reaches past a delivery still running or not yet seen."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from shared.messaging.consumer import Acks


@dataclass(eq=False)
class FakeChannel:
    sent: list[tuple[str, int, bool]] = field(default_factory=list)
    is_closed: bool = False

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.sent.append(("ack", delivery_tag, multiple))


@dataclass(eq=False)
class FakeMessage:
    channel: FakeChannel
    delivery_tag: int

    async def nack(self, requeue: bool = True) -> None:
        self.channel.sent.append(("nack", self.delivery_tag, False))

    async def ack(self) -> None:
        self.channel.sent.append(("plain ack", self.delivery_tag, False))


def deliveries(channel: FakeChannel, acks: Acks, tags: range) -> dict[int, Any]:
    messages = {tag: FakeMessage(channel, tag) for tag in tags}
    for message in messages.values():
        acks.track(message)  # type: ignore[arg-type]
    return messages


async def test_jobs_finishing_together_are_acked_with_one_multiple_ack() -> None:
    channel, acks = FakeChannel(), Acks()
    messages = deliveries(channel, acks, range(1, 11))
    await asyncio.gather(*(acks.ack(messages[tag]) for tag in range(1, 11)))
    assert channel.sent == [("ack", 10, True)]


async def test_a_running_job_stops_the_multiple_ack_and_later_ones_go_alone() -> None:
    channel, acks = FakeChannel(), Acks()
    messages = deliveries(channel, acks, range(1, 7))
    # 3 still runs; 4 is given back.
    await asyncio.gather(acks.ack(messages[1]), acks.ack(messages[2]), acks.nack(messages[4]),
                         acks.ack(messages[5]), acks.ack(messages[6]))
    assert ("ack", 2, True) in channel.sent
    assert ("nack", 4, False) in channel.sent
    assert ("ack", 5, False) in channel.sent and ("ack", 6, False) in channel.sent
    assert not any(multiple and tag > 2 for _, tag, multiple in channel.sent)
    channel.sent.clear()
    await acks.ack(messages[3])  # everything below is settled now: a multiple ack is safe again
    assert channel.sent == [("ack", 3, True)]
    more = deliveries(channel, acks, range(7, 9))
    await asyncio.gather(acks.ack(more[7]), acks.ack(more[8]))
    assert channel.sent[-1] == ("ack", 8, True)


async def test_a_delivery_not_yet_seen_stops_the_multiple_ack() -> None:
    channel, acks = FakeChannel(), Acks()
    messages = deliveries(channel, acks, range(1, 3))
    # tag 3 is delivered but its callback has not run yet: never tracked here
    fourth = FakeMessage(channel, 4)
    acks.track(fourth)  # type: ignore[arg-type]
    await asyncio.gather(acks.ack(messages[1]), acks.ack(messages[2]), acks.ack(fourth))  # type: ignore[arg-type]
    assert channel.sent == [("ack", 2, True), ("ack", 4, False)]


async def test_acks_of_a_closed_channel_fail_and_a_new_channel_starts_afresh() -> None:
    old, new, acks = FakeChannel(), FakeChannel(), Acks()
    stale = deliveries(old, acks, range(1, 3))
    old.is_closed = True
    results = await asyncio.gather(acks.ack(stale[1]), return_exceptions=True)
    assert isinstance(results[0], ConnectionError) and old.sent == []
    fresh = deliveries(new, acks, range(1, 3))
    await asyncio.gather(acks.ack(fresh[1]), acks.ack(fresh[2]))
    assert new.sent == [("ack", 2, True)]
