"""processors.intake.governance_ahead: the governance records of a batch come first and in
offset order, those the batch's fetch handed out before those read ahead (a policy
publication read ahead was decided before the key registration produced before it:
test_governance_group's positions came out [9, 8] under a rebalance)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from processors.intake import governance_ahead

GOV, REQ = "t.governance", "t.requests"


def record(topic: str, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, None, b"%s-%d" % (topic.encode(), offset),
                          None, 0, 0, [])


class Consumer:
    """The four calls governance_ahead makes, over a governance partition holding
    ``held`` records from offset ``position`` (what the fetch buffer has not handed out)."""

    def __init__(self, position: int, held: int) -> None:
        self.tp = TopicPartition(GOV, 0)
        self._position, self._high = position, position + held

    def assignment(self) -> set[TopicPartition]:
        return {self.tp, TopicPartition(REQ, 0)}

    def highwater(self, tp: TopicPartition) -> int:
        return self._high

    async def position(self, tp: TopicPartition) -> int:
        return self._position

    async def getmany(self, tp: TopicPartition, **_: Any) -> dict[TopicPartition, list[Any]]:
        got = [record(GOV, offset) for offset in range(self._position, self._high)]
        self._position = self._high
        return {tp: got}


def offsets(records: list[ConsumerRecord[bytes, bytes]]) -> list[tuple[str, int]]:
    return [(r.topic, r.offset) for r in records]


def test_governance_handed_out_comes_before_governance_read_ahead() -> None:
    batch = [record(REQ, 40), record(GOV, 7), record(REQ, 41)]
    ordered = asyncio.run(governance_ahead(Consumer(8, 2), GOV, batch, 100))
    assert offsets(ordered) == [(GOV, 7), (GOV, 8), (GOV, 9), (REQ, 40), (REQ, 41)]


def test_a_batch_with_nothing_left_to_read_ahead_keeps_its_governance_first() -> None:
    batch = [record(REQ, 3), record(GOV, 1), record(GOV, 2)]
    ordered = asyncio.run(governance_ahead(Consumer(3, 0), GOV, batch, 100))
    assert offsets(ordered) == [(GOV, 1), (GOV, 2), (REQ, 3)]
