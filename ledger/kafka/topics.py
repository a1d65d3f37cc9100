"""Topic names and explicit topic creation.

Topics are created explicitly, never auto-created: the embedded broker auto-creates with 4
partitions whatever we want, and after a restart it silently comes back empty (DESIGN.md
section 9). :func:`ensure_topics` creates what is missing, accepts what exists, and then
checks that every topic has the partition count we asked for; a mismatch is a ConfigError
because lineage keys would hash to different partitions than before (section 6).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from ledger.core.streams import SINGLE_PARTITION_STREAMS, Stream
from ledger.errors import ConfigError, Unavailable

#: Logical stream names, in flow order (the list is ``ledger.core.streams.Stream``).
STREAMS = tuple(s.value for s in Stream)
DEFAULT_PREFIX = "gov."


@dataclass(frozen=True, slots=True)
class Topics:
    """The govledger topic names under one prefix (``gov.requests`` ...): ``governance``
    ... ``alerts`` are set from ``prefix``, one per entry of :data:`STREAMS`."""

    prefix: str = DEFAULT_PREFIX
    governance: str = field(init=False, repr=False, compare=False)
    requests: str = field(init=False, repr=False, compare=False)
    decisions: str = field(init=False, repr=False, compare=False)
    revocations: str = field(init=False, repr=False, compare=False)
    executions: str = field(init=False, repr=False, compare=False)
    verdicts: str = field(init=False, repr=False, compare=False)
    alerts: str = field(init=False, repr=False, compare=False)
    deadletter: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for stream in STREAMS:
            object.__setattr__(self, stream, self.name(stream))

    def name(self, stream: str) -> str:
        """Full topic name of a logical stream. Raises ValueError for an unknown stream."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        return f"{self.prefix}{stream}"

    def all(self) -> tuple[str, ...]:
        """Every topic name, in flow order."""
        return tuple(self.name(s) for s in STREAMS)

    def single_partition(self) -> tuple[str, ...]:
        """The topics that have one partition whatever the setting (one order for all)."""
        return tuple(self.name(s) for s in SINGLE_PARTITION_STREAMS)


def _validate_name(name: str) -> None:
    # Kafka's own rule: 1-249 chars of [a-zA-Z0-9._-], not "." or "..".
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not 0 < len(name) < 250 or name in (".", "..") or not set(name) <= allowed:
        raise ConfigError(f"invalid Kafka topic name {name!r}")


async def partition_ids(admin: AIOKafkaAdminClient, names: Iterable[str]
                        ) -> dict[str, tuple[int, ...]]:
    """The partition ids of each existing topic in ``names``, per the broker's metadata
    (absent topics, and topics the broker answers with an error, are left out).

    Asks for *all* topics: a Metadata request that names a topic auto-creates it on the
    embedded broker (with 4 partitions), which would defeat explicit creation.
    Raises KafkaError.
    """
    wanted = set(names)
    found: dict[str, tuple[int, ...]] = {}
    for topic in await admin.describe_topics(None):
        if topic.get("error_code", 0) == 0 and topic["topic"] in wanted:
            found[topic["topic"]] = tuple(sorted(p["partition"]
                                                 for p in topic.get("partitions", [])))
    return found


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each existing topic in ``names`` (absent ones are left out)."""
    return {name: len(ids) for name, ids in (await partition_ids(admin, names)).items()}


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int,
                        replication: int, *, client_options: Mapping[str, Any] | None = None,
                        timeout_s: float = 30.0,
                        single: Iterable[str] = ()) -> dict[str, int]:
    """Create the missing topics, then verify every one exists with ``partitions`` (the
    topics named in ``single``: with one).

    Idempotent: topics that already exist are fine if their partition count matches.
    ``client_options`` are extra aiokafka admin options
    (see ``ledger.kafka.clients.client_options``).
    Returns ``{topic: partition count}``. Raises ConfigError on a bad name or a partition
    count mismatch, Unavailable if the broker does not answer or the topics do not appear
    within ``timeout_s``.
    """
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        _validate_name(name)
    if partitions < 1 or replication < 1:
        raise ConfigError("partitions and replication must be >= 1")
    ones = set(single)
    want = {name: 1 if name in ones else partitions for name in wanted}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **dict(client_options or {}))
    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = await _describe(admin, wanted)
        missing = [n for n in wanted if n not in existing]
        if missing:
            await _create(admin, missing, want, replication, timeout_s)
        while True:
            existing = await _describe(admin, wanted)
            if all(n in existing for n in wanted):
                break
            if time.monotonic() >= deadline:
                absent = [n for n in wanted if n not in existing]
                raise Unavailable(f"topics did not appear in {timeout_s}s: {absent}")
            await asyncio.sleep(0.05)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise Unavailable(f"cannot ensure topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    wrong = {n: c for n, c in existing.items() if c != want[n]}
    if wrong:
        raise ConfigError(f"topics exist with the wrong partition count (want {partitions}, "
                          f"one for {sorted(ones)}): {wrong}")
    return {n: existing[n] for n in wanted}


async def _create(admin: AIOKafkaAdminClient, names: list[str], partitions: dict[str, int],
                  replication: int, timeout_s: float) -> None:
    """CreateTopics; "already exists" (a concurrent creator won) is not an error."""
    new = [NewTopic(name=n, num_partitions=partitions[n], replication_factor=replication)
           for n in names]
    response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
    for topic_error in getattr(response, "topic_errors", ()):
        name, code = topic_error[0], topic_error[1]
        if code == 0:
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        raise Unavailable(f"creating topic {name} failed: {error.__name__} {topic_error[2:]}")
