"""The sequencer in a child process of ``govledger up`` (``Settings.sequencer_own_process``,
the default), as the processor already is.

Why: the API and the sequencer on one event loop and one GIL made the API's process the
limit of ``govledger up`` (issue 14: ~1.6 ms of CPU per HTTP decision). In a child the
sequencer gets a core of its own, and it verifies what it reads from Kafka itself, as every
hop does.

``python -m ledger.server.sequencer_process [--ready-file F]``, settings from
``GOVLEDGER_*``: one sequencer worker (ledger/server/sequencing.py) under the keys in force
in its ledger. It verifies the ledger against its last signed checkpoint, starts, writes
``--ready-file`` and runs until SIGTERM/SIGINT. Its metrics go to stdout as JSON lines
(:class:`MetricsLines`), which the service relays into its own ``/metrics``
(:func:`relay_metrics`); logs go to stderr. Exit status as every child's
(ledger/server/children.py ``child_main``): 3 Unavailable, 2 a configuration error, 1 any
other GovLedgerError (a ledger that does not verify against its checkpoint).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO

from ledger.config import Settings
from ledger.datadir import DataDir
from ledger.entrypoint import child_main
from ledger.errors import ConfigError
from ledger.kafka.topics import Topics
from ledger.log.governance import follow_ledger
from ledger.log.store import LedgerStore
from ledger.server.sequencing import SequencerMetrics, open_sequencer

log = logging.getLogger("govledger.sequencer")


class MetricsLines:
    """:class:`~ledger.server.sequencing.SequencerMetrics` as JSON lines on ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def _line(self, item: dict[str, object]) -> None:
        self.out.write(json.dumps(item, separators=(",", ":")) + "\n")
        self.out.flush()

    def observe_refused(self, by_reason: Mapping[str, int]) -> None:
        self._line({"refused": dict(by_reason)})

    def observe_out_of_order(self, by_reason: Mapping[str, int]) -> None:
        self._line({"late": dict(by_reason)})

    def set_ledger(self, size: int, checkpoint_age_s: float) -> None:
        self._line({"size": size, "age_s": checkpoint_age_s})

    def set_lag(self, component: str, topic: str, lag: int) -> None:
        self._line({"topic": topic, "lag": lag})


def _counts(value: object) -> dict[str, int] | None:
    if isinstance(value, dict) and all(isinstance(v, int) and not isinstance(v, bool)
                                       and v >= 0 for v in value.values()):
        return {str(k): v for k, v in value.items()}
    return None


def apply_metrics_line(line: bytes, metrics: SequencerMetrics,
                       topics: Collection[str]) -> bool:
    """Apply one :class:`MetricsLines` line to ``metrics``; False (nothing applied) for a
    line that is not one. Labels stay bounded: the metrics map reasons to their own bounded
    label sets, and a lag is taken only for one of ``topics`` (the service's)."""
    try:
        item = json.loads(line)
    except ValueError:
        return False
    if not isinstance(item, dict):
        return False
    if (refused := _counts(item.get("refused"))) is not None:
        metrics.observe_refused(refused)
    elif (late := _counts(item.get("late"))) is not None:
        metrics.observe_out_of_order(late)
    elif (isinstance(size := item.get("size"), int) and size >= 0
          and isinstance(age := item.get("age_s"), int | float)):
        metrics.set_ledger(size, float(age))
    elif (isinstance(topic := item.get("topic"), str) and topic in topics
          and isinstance(lag := item.get("lag"), int) and not isinstance(lag, bool)):
        metrics.set_lag("sequencer", topic, lag)
    else:
        return False
    return True


async def relay_metrics(lines: asyncio.StreamReader, metrics: SequencerMetrics,
                        topics: Collection[str]) -> None:
    """Apply the child's metrics lines (lags of ``topics`` only) until its stdout closes (it
    exited)."""
    while True:
        try:
            line = await lines.readline()
        except ValueError:  # a line past the reader's limit: dropped, the next one is read
            log.debug("the sequencer process wrote an overlong line")
            continue
        if not line:
            return
        if not apply_metrics_line(line, metrics, topics):
            log.debug("the sequencer process wrote a line that is not a metric: %r",
                      line[:200])


async def serve(settings: Settings, ready_file: Path | None) -> None:
    """Run one sequencer until SIGTERM/SIGINT. Raises ProofError (the ledger does not verify
    against its checkpoint), ConfigError or Unavailable."""
    if settings.kafka_bootstrap is None:
        raise ConfigError("python -m ledger.server.sequencer_process needs "
                          "GOVLEDGER_KAFKA_BOOTSTRAP")
    data = DataDir.of(settings)
    with LedgerStore(data.ledger_db) as store:
        governance = follow_ledger(settings.data_dir, store)
    worker = await open_sequencer(settings, settings.kafka_bootstrap,
                                  Topics(settings.topic_prefix), governance, data.ledger_key,
                                  MetricsLines(sys.stdout))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
        if ready_file is not None:
            ready_file.write_text("ready\n")
        await worker.run(stop)
    finally:
        await worker.close()


def main() -> None:
    child_main("python -m ledger.server.sequencer_process", __doc__, "govledger.sequencer",
               "govledger-sequencer", serve)


if __name__ == "__main__":
    main()
