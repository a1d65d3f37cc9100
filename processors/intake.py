"""What the decision worker takes from Kafka for one batch, beyond what ``getmany`` handed
out: the governance records (issue 13: governance is consumed ahead of requests).

The fetch buffer hands out records partition by partition, and at start the governance
partition may not be fetched yet while a backlog of requests is. So, before a batch is
decided, the governance partition is read up to its high watermark as of the last fetch (no
request to the broker when it is already there; at start, until its first fetch answers),
and the worker decides those records first. A fetch that brings a request produced after
the broker acknowledged a governance event brings that event too, so the request is decided
under it. A worker of a group that does not hold the governance partition reads nothing
here: it applies the holder's journal entries (processors/catchup.py).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from ledger.errors import Unavailable

GOVERNANCE_CATCH_UP_S = 10.0  # longest wait for governance records the broker holds


async def governance_ahead(consumer: AIOKafkaConsumer, governance: str,
                           records: list[ConsumerRecord[bytes, bytes]], max_records: int
                           ) -> list[ConsumerRecord[bytes, bytes]]:
    """``records`` with the governance first, in offset order: the governance records among
    ``records`` (handed out already: the lowest offsets), then every record of topic
    ``governance`` the consumer knows of and has not handed out (module docstring), then
    the rest of ``records``. Raises Unavailable if they do not come within
    ``GOVERNANCE_CATCH_UP_S``, or on a Kafka error."""
    mine = [tp for tp in consumer.assignment() if tp.topic == governance]
    ahead: list[ConsumerRecord[bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GOVERNANCE_CATCH_UP_S
    try:
        for tp in mine:
            while (high := consumer.highwater(tp)) is None or await consumer.position(tp) < high:
                if loop.time() > deadline:
                    raise Unavailable("the governance topic's records did not arrive in "
                                      f"{GOVERNANCE_CATCH_UP_S:.0f} s")
                got = await consumer.getmany(tp, timeout_ms=100, max_records=max_records)
                ahead += got.get(tp, [])
    except KafkaError as exc:
        raise Unavailable(f"processor consume failed: {exc}") from exc
    handed = [r for r in records if r.topic == governance]
    return [*handed, *ahead, *(r for r in records if r.topic != governance)]
