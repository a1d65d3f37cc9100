"""Shared fixtures. Keep this small and generic: add fixtures, not helpers with logic.

``broker``: one embedded Kafka-protocol broker per test session (per xdist worker), on a free
loopback port, stopped at the end even when tests fail. ``topics``: the six govledger topics
under a prefix unique to the test, created explicitly, so tests sharing the broker never see
each other's messages. ``kafka_settings``: embedded-broker settings rooted in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics, ensure_topics

TEST_PARTITIONS = 4


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A running embedded broker shared by the session (one per xdist worker)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def kafka_settings(tmp_path: Path) -> Settings:
    """Settings for the embedded broker, data under ``tmp_path``."""
    return Settings(data_dir=tmp_path / "data", kafka_bootstrap=None,
                    partitions=TEST_PARTITIONS)


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Topics:
    """The govledger topics under a fresh prefix, created with ``TEST_PARTITIONS`` each."""
    names = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    asyncio.run(ensure_topics(broker.bootstrap, names.all(), TEST_PARTITIONS, 1,
                              single=names.single_partition()))
    return names
