"""The faust-streaming app: a thin shell around :class:`~processors.monitor.watcher.Watcher`.

One agent reads requests, decisions, revocations, executions and verdicts in batches
(``take_events``), a timer judges what time decides (``Watcher.tick``), and alerts go to the
alerts topic, which the sequencer logs like every other. What docs/broker.md found on the
embedded broker, and how it is handled here:

* faust fixes the worker consumer's fetch wait at 1.5 s, and this broker holds every fetch
  that long: :func:`lower_fetch_wait` sets it from Settings (the idle wait, 500 ms);
* the worker starts a web server even with ``web_enabled=False``: ``--without-web``;
* repartition topics are named after the agent: the agent's name is unique per app id, and
  nothing is repartitioned (no ``group_by``);
* changelog tables cannot be restored from this broker: no faust Table; the rules' windowed
  tables are rebuilt from the ledger at start (``processors.monitor.replay``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from ledger.clock import utc_now
from ledger.config import Settings
from ledger.core.streams import Stream
from ledger.errors import EXIT_UNAVAILABLE, GovLedgerError
from ledger.kafka.topics import Topics
from processors.core.monitor_rules import Alert
from processors.monitor.replay import consumed_offsets, replay, wait_for_ledger
from processors.monitor.watcher import Watcher

log = logging.getLogger("govledger.monitor")

#: What the monitor reads (the alerts it writes are read back from the ledger at start).
WATCHED = (Stream.REQUESTS, Stream.DECISIONS, Stream.REVOCATIONS, Stream.EXECUTIONS,
           Stream.VERDICTS)
TAKE, WITHIN_S = 500, 0.05


def lower_fetch_wait(wait_ms: int) -> None:
    """Make faust's worker consumer fetch with ``wait_ms`` instead of its fixed 1500 ms.

    faust-streaming 0.15.3 passes ``fetch_max_wait_ms=1500`` in ``_create_worker_consumer``
    and has no setting for it; the aiokafka consumer keeps it in ``_fetch_max_wait_ms``
    until started. Pinned by pyproject (faust-streaming <0.16); a test fails if it moves.
    """
    cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(cls, "_govledger_original_create", cls._create_worker_consumer)

    def create_with_wait(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer
    cls._govledger_original_create = create
    cls._create_worker_consumer = create_with_wait


def faust_settings(settings: Settings, datadir: Path) -> dict[str, Any]:
    """The faust options docs/broker.md lists for the embedded broker (and Kafka)."""
    session_s = settings.kafka_session_timeout_ms / 1000
    request_s = max(settings.kafka_request_timeout_ms / 1000, session_s)
    return {"datadir": str(datadir), "value_serializer": "raw", "key_serializer": "raw",
            "store": "memory://", "web_enabled": False,
            "broker_session_timeout": session_s, "broker_heartbeat_interval": 3,
            "broker_request_timeout": request_s, "broker_rebalance_timeout": request_s,
            "consumer_auto_offset_reset": "earliest", "topic_allow_declare": False,
            "topic_disable_leader": True, "producer_acks": -1, "producer_linger_ms": 2}


def app_id(settings: Settings) -> str:
    """The faust app id, which is also the consumer group: one per topic prefix."""
    return f"{settings.topic_prefix}monitor"


def build_app(settings: Settings, bootstrap: str, watcher: Watcher, ledger_db: Path,
              on_ready: Callable[[], None] = lambda: None) -> faust.App:
    """The monitor app. Start it with ``app.main()`` (argv ``worker --without-web``)."""
    # Off the decision path: the idle wait (500 ms), not the decision path's 10 ms, so an
    # idle monitor does not poll the broker 100 times a second; a busy one never waits.
    lower_fetch_wait(max(settings.fetch_max_wait_ms, settings.kafka_idle_fetch_max_wait_ms))
    topics = Topics(settings.topic_prefix)
    app = faust.App(app_id(settings), broker=f"kafka://{bootstrap}",
                    **faust_settings(settings, settings.data_dir / "monitor"))
    source = app.topic(*(topics.name(s) for s in WATCHED), value_type=bytes, key_type=bytes)
    alerts = app.topic(topics.alerts, value_type=bytes, key_type=bytes)
    ready = asyncio.Event()

    async def publish(alert: Alert, envelope: bytes) -> None:
        await alerts.send(key=(alert.root or alert.alert_id).encode(), value=envelope)

    @app.task  # type: ignore[untyped-decorator]
    async def rebuild() -> None:
        try:
            wanted = await consumed_offsets(settings, bootstrap, app_id(settings),
                                            [topics.name(s) for s in WATCHED], topics.alerts)
            await wait_for_ledger(ledger_db, wanted, settings.monitor_ledger_wait_s)
            folded, envelopes = await asyncio.to_thread(replay, watcher, ledger_db, utc_now())
        except GovLedgerError as exc:
            # Following the topics without the ledger's state would miss or repeat alerts.
            log.error("cannot rebuild the monitor's windows from the ledger: %s", exc)
            os._exit(EXIT_UNAVAILABLE)  # no durable state here: nothing to flush
        watcher.metrics.replayed.set(folded)
        for envelope in envelopes:
            await alerts.send(value=envelope)
        log.info("monitor rebuilt from the ledger: %d leaves folded", folded)
        ready.set()
        on_ready()

    @app.agent(source, name=f"{app_id(settings)}-watch")  # unique: repartition topic names
    async def watch(stream: Any) -> None:
        await ready.wait()
        async for batch in stream.take_events(TAKE, within=WITHIN_S):
            now = utc_now()
            for event in batch:
                # a tombstone or non-bytes value fails verification like any bad input
                data = event.value if isinstance(event.value, bytes) else b""
                for alert, envelope in watcher.ingest(data, now):
                    await publish(alert, envelope)
            last = batch[-1].message
            mark = app.consumer.highwater(last.tp)
            if mark is not None:
                watcher.metrics.lag.labels(last.tp.topic).set(max(mark - last.offset - 1, 0))

    @app.timer(settings.monitor_tick_s)  # type: ignore[untyped-decorator]
    async def judge() -> None:
        if ready.is_set():
            for alert, envelope in watcher.tick(utc_now()):
                await publish(alert, envelope)

    return app
