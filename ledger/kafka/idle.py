"""Idle backoff for the long-running consumers: longer fetch waits when nothing arrives, the
short wait again on the first data.

A consumer keeps one fetch in flight per broker: each asks the broker to wait up to
``fetch_max_wait_ms`` for data. The embedded broker holds every fetch for that full wait even
when data arrives meanwhile (docs/broker.md), so the wait is the consume latency and is kept
short (10 ms): an idle consumer then sends ~100 fetches a second. :class:`IdleBackoff` lets
the wait grow once nothing has arrived for ``quiet_s`` (doubling per empty round, up to
``cap_ms``) and drops it back to the base wait on the first record (or on :meth:`wake`, when
this process has just sent something whose answer it awaits). A busy consumer never gets an
empty round, so its latency is unchanged.

What it costs: on the embedded broker, the first record after an idle period waits for the
fetch in flight, at most ``cap_ms`` per consume hop. On Apache Kafka nothing: the broker
answers a waiting fetch as soon as data arrives, whatever the wait (which is why the base wait
there is already 500 ms, above the cap: the wait never changes).

aiokafka fixes ``fetch_max_wait_ms`` when the consumer is built and has no public setter; it
reads it from its fetcher (``consumer._fetcher._fetch_max_wait_ms``) for each new fetch
request. :func:`set_fetch_wait` writes that one private attribute (checked to exist, so an
aiokafka upgrade that renames it fails loudly in tests and, at run time, only stops the
backoff: the consumer keeps its base wait). Pausing the partitions (public) would also stop
the polling, but then the first record after idle waits on Apache Kafka as well.

Pure: :class:`IdleBackoff`. Shell: :func:`set_fetch_wait`, :class:`PacedConsumer`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

log = logging.getLogger("govledger.kafka")

IDLE_CAP_MS = 500
"""The longest fetch wait of an idle consumer: what the first record after idle may wait
(``Settings.kafka_idle_fetch_max_wait_ms`` for the decision path)."""
IDLE_AFTER_S = 1.0
"""How long without any record before the wait starts to grow."""


@dataclass(slots=True)
class IdleBackoff:
    """The fetch wait to use after each round of a consumer loop. Pure: time is an argument.

    Requires 1 <= base_ms. ``cap_ms`` below ``base_ms`` means no backoff (the wait stays
    ``base_ms``, as on Apache Kafka's 500 ms).
    """

    base_ms: int
    cap_ms: int = IDLE_CAP_MS
    quiet_s: float = IDLE_AFTER_S
    wait_ms: int = field(init=False)
    _last_data: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.wait_ms = self.base_ms

    def observe(self, got_records: bool, now: float) -> int:
        """One round ended at ``now`` (monotonic seconds), with or without records: the wait
        for the next fetches. Records -> the base wait at once; no record for ``quiet_s`` ->
        the wait doubles each empty round, up to ``max(cap_ms, base_ms)``."""
        if got_records or self._last_data is None:
            self._last_data = now
            self.wait_ms = self.base_ms
        elif now - self._last_data >= self.quiet_s:
            self.wait_ms = max(self.base_ms, min(self.cap_ms, self.wait_ms * 2))
        return self.wait_ms

    def wake(self, now: float) -> int:
        """Something is expected soon (this process just sent a request): the base wait,
        as if records had arrived at ``now``."""
        return self.observe(True, now)


def set_fetch_wait(consumer: AIOKafkaConsumer, wait_ms: int) -> bool:
    """Make the started ``consumer``'s next fetch requests wait up to ``wait_ms`` (the fetch
    in flight keeps its own). Writes aiokafka's private ``Fetcher._fetch_max_wait_ms``, the
    value each new FetchRequest is built from (module docstring: there is no public way).
    Returns False, changing nothing, if the consumer is not started or aiokafka has no such
    attribute."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
        return False
    fetcher._fetch_max_wait_ms = wait_ms
    return True


class PacedConsumer:
    """A started consumer read through :meth:`getmany`, with :class:`IdleBackoff` applied
    to its fetch wait after every round. ``base_ms`` is the wait the consumer was built
    with."""

    def __init__(self, consumer: AIOKafkaConsumer, base_ms: int,
                 cap_ms: int = IDLE_CAP_MS) -> None:
        self.consumer = consumer
        self.backoff = IdleBackoff(base_ms, cap_ms)
        self._adjustable = True

    async def getmany(self, *, timeout_ms: int, max_records: int | None = None
                      ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """``consumer.getmany``, then the fetch wait for the next round. Raises what
        aiokafka raises (KafkaError)."""
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = (
            await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records))
        self._apply(self.backoff.observe(any(batches.values()), time.monotonic()))
        return batches

    def wake(self) -> None:
        """Back to the base wait now (an answer is expected soon)."""
        self._apply(self.backoff.wake(time.monotonic()))

    def _apply(self, wait_ms: int) -> None:
        if self._adjustable and not set_fetch_wait(self.consumer, wait_ms):
            self._adjustable = False
            log.warning("cannot adjust the consumer's fetch wait (aiokafka changed?): "
                        "idle consumers keep polling every %d ms", self.backoff.base_ms)
