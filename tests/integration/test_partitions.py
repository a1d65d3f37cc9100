"""Consumers follow the broker's partition count, never ``settings.partitions``.

The topics hold 8 partitions, the settings say 4: every consumer that assigns partitions by
hand (the SDK's decision reader, the sequencer) still reads all 8, on the real embedded
broker. A topic the broker does not know is Unavailable, never "assume N".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from ledger.config import Settings
from ledger.core.envelope import sign_event_with_id
from ledger.core.events import AuthorizationDenied
from ledger.datadir import DataDir
from ledger.errors import Reason, Unavailable
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.offsets import topic_partitions
from ledger.kafka.topics import Topics, ensure_topics
from ledger.keyfiles import load_keyring
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from ledger.log.worker import SequencerWorker
from ledger.sdk.client import Client
from tests.factories import ALICE, AUTHORITY, default_ring, request
from tests.service_support import make_data_dir

pytestmark = pytest.mark.integration

BROKER_PARTITIONS = 8
LOCAL_PARTITIONS = 4


def eight_partition_topics(broker: EmbeddedBroker) -> Topics:
    names = Topics(prefix=f"p{uuid.uuid4().hex[:12]}.")
    asyncio.run(ensure_topics(broker.bootstrap, names.all(), BROKER_PARTITIONS, 1))
    return names


def settings_for(topics: Topics, data: Path) -> Settings:
    return Settings(data_dir=data, kafka_bootstrap=None, partitions=LOCAL_PARTITIONS,
                    topic_prefix=topics.prefix)


async def produce_one_per_partition(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """``values[p]`` to partition ``p`` of ``topic``, explicitly (no partitioner)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=b"k", partition=partition)
    finally:
        await producer.stop()


def test_a_client_set_to_4_partitions_receives_decisions_from_all_8(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    topics = eight_partition_topics(broker)
    settings = settings_for(topics, tmp_path / "data")
    now = datetime.now(UTC).replace(microsecond=0)
    denials = [AuthorizationDenied(signer="govledger:authority", tenant="acme",
                                   nonce=f"part-deny-{p:09d}", issued_at=now,
                                   request_id=f"{p:064x}", reasons=(Reason.POLICY_DENY,))
               for p in range(BROKER_PARTITIONS)]

    async def scenario() -> set[str]:
        async with Client(settings, broker.bootstrap, default_ring()) as client:
            envelopes = [sign_event_with_id(d, AUTHORITY)[0] for d in denials]
            await produce_one_per_partition(broker.bootstrap, topics.decisions, envelopes)
            got = await asyncio.gather(*(client.decision(d.request_id, timeout=15)
                                         for d in denials))
            return {d.subject_id for d in got}

    assert asyncio.run(scenario()) == {d.request_id for d in denials}


def test_the_sequencer_set_to_4_partitions_logs_events_from_all_8(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    topics = eight_partition_topics(broker)
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(topics, data.root)
    now = datetime.now(UTC).replace(microsecond=0)
    signed = [sign_event_with_id(request(nonce=f"part-req-{p:010d}", issued_at=now), ALICE)
              for p in range(BROKER_PARTITIONS)]
    ids = [event_id for _, event_id in signed]

    async def scenario() -> set[str]:
        keyring = load_keyring(DataDir(settings.data_dir).keyring)

        def opener():  # type: ignore[no-untyped-def]
            return open_ledger(settings.data_dir, keyring_verifier(keyring))
        worker = await SequencerWorker.open(settings, broker.bootstrap, topics, opener)
        await worker.start()
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await produce_one_per_partition(broker.bootstrap, topics.requests,
                                            [envelope for envelope, _ in signed])
            deadline = time.monotonic() + 30
            while True:
                with LedgerStore(DataDir(settings.data_dir).ledger_db) as store:
                    held = store.contains(ids)
                if held == set(ids) or time.monotonic() > deadline:
                    return held
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
            await worker.close()

    assert asyncio.run(scenario()) == set(ids)


def test_partitions_of_a_topic_the_broker_lacks_are_unavailable(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    topics = eight_partition_topics(broker)
    settings = settings_for(topics, tmp_path / "data")
    found = asyncio.run(topic_partitions(settings, broker.bootstrap, [topics.requests]))
    assert [tp.partition for tp in found] == list(range(BROKER_PARTITIONS))
    with pytest.raises(Unavailable, match="no partitions"):
        asyncio.run(topic_partitions(settings, broker.bootstrap,
                                     [topics.requests, f"absent{uuid.uuid4().hex[:8]}"]))
