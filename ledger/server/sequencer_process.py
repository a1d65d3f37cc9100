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
(:func:`ledger.entrypoint.child_main`): 1 a failed check (a ledger that does not verify
against its checkpoint), 2 a configuration error, 3 Unavailable or any error no component
expects.

Why stdout and not a metrics port of its own (as the monitor has): ``govledger up`` serves
one ``/metrics`` for the whole service, and a port per child would be one more listener to
configure, secure and scrape. The pipe needs no port; the service watches its relay (a relay
that stops on an error stops the service, since the child would block on a full pipe).
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
        self._lag: dict[str, int] = {}  # the last lag sent per topic

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
        """Sent when it changed: the worker reports every topic on every pass of its loop,
        and each line is read and parsed on the service's event loop."""
        if self._lag.get(topic) != lag:
            self._lag[topic] = lag
            self._line({"topic": topic, "lag": lag})


_MAX_COUNT = 2**53 - 1  # what JSON carries exactly; more is not a count this child sends
_MAX_AGE_S = 1e9


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def _counts(value: object) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    counts: dict[str, int] = {}
    for key, item in value.items():
        if (count := _count(item)) is None:
            return None
        counts[str(key)] = count
    return counts


def apply_metrics_line(line: bytes, metrics: SequencerMetrics,
                       topics: Collection[str]) -> bool:
    """Apply one :class:`MetricsLines` line to ``metrics``; False (nothing applied) for a
    line that is not one, whatever its bytes. Labels stay bounded: the metrics map reasons
    to their own bounded label sets, and a lag is taken only for one of ``topics`` (the
    service's); numbers only within what the child sends (counts up to 2**53 - 1, ages as
    finite seconds)."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return False
    if not isinstance(item, dict):
        return False
    if (refused := _counts(item.get("refused"))) is not None:
        metrics.observe_refused(refused)
    elif (late := _counts(item.get("late"))) is not None:
        metrics.observe_out_of_order(late)
    elif ((size := _count(item.get("size"))) is not None
          and isinstance(age := item.get("age_s"), int | float) and not isinstance(age, bool)
          and 0 <= age <= _MAX_AGE_S):
        metrics.set_ledger(size, float(age))
    elif (isinstance(topic := item.get("topic"), str) and topic in topics
          and (lag := _count(item.get("lag"))) is not None):
        metrics.set_lag("sequencer", topic, lag)
    else:
        return False
    return True


async def relay_metrics(lines: asyncio.StreamReader, metrics: SequencerMetrics,
                        topics: Collection[str]) -> None:
    """Apply the child's metrics lines (lags of ``topics`` only) until its stdout closes (it
    exited). It must read to the end whatever a line holds: a reader that stopped would
    leave the child blocked on a full pipe, and its exit unseen."""
    while True:
        try:
            line = await lines.readline()
        except ValueError:  # a line past the reader's limit: dropped, the next one is read
            log.warning("the sequencer process wrote an overlong line")
            continue
        if not line:
            return
        try:
            applied = apply_metrics_line(line, metrics, topics)
        except Exception:  # a bug here must not stop the draining: logged, never silent
            log.exception("the sequencer's metrics line %r could not be applied", line[:200])
            continue
        if not applied:
            log.warning("the sequencer process wrote a line that is not a metric: %r",
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
