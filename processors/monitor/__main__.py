"""``python -m processors.monitor [--ready-file F]``: the governance monitor, settings from
GOVLEDGER_* (what ``govledger monitor`` and ``govledger up`` run as a child process).

Needs the data directory (authority key, ``ledger.db``: the keys in force are the ledger's
governance, followed live) and a running sequencer:
it rebuilds its windows from the ledger first and writes ``--ready-file`` when it follows
the topics. Exit status: 2 configuration, 3 unavailable (no broker, the ledger behind) or an
error no component expects; never 1, which ``govledger up`` reads as a failed check.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ledger.config import Settings, load_settings
from ledger.datadir import DataDir
from ledger.errors import EXIT_INVALID, EXIT_UNAVAILABLE, ConfigError
from ledger.keyfiles import load_signer
from ledger.log.governance import LedgerKeyring
from processors.core.monitor_rules import RuleConfig
from processors.genesis import authority_identity
from processors.monitor.app import build_app
from processors.monitor.watcher import Watcher


def rule_config(settings: Settings) -> RuleConfig:
    """The rules' bounds and thresholds from Settings (``GOVLEDGER_MONITOR_*``)."""
    from datetime import timedelta
    attack = settings.monitor_burst_threshold
    return RuleConfig(report_grace=timedelta(seconds=settings.monitor_report_grace_s),
                      silent_after=timedelta(seconds=settings.monitor_silent_after_s),
                      burst_window=timedelta(seconds=settings.monitor_burst_window_s),
                      burst_threshold={"signature": attack, "replay": attack},
                      default_threshold=max(attack, 20),
                      storm_limit=settings.monitor_storm_limit,
                      horizon=timedelta(seconds=settings.max_ttl_s
                                        + settings.monitor_silent_after_s))


def build_watcher(settings: Settings) -> Watcher:
    """The watcher of the data directory. Raises ConfigError."""
    data = DataDir(settings.data_dir)
    if not data.ledger_db.exists():
        raise ConfigError(f"no ledger at {data.ledger_db}: run `govledger init` first")
    keyring = LedgerKeyring(settings.data_dir)  # the keys in force per the ledger, live
    signer = load_signer(data.authority_key)
    return Watcher(keyring, signer, authority_identity(keyring(), signer),
                   rule_config(settings))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m processors.monitor", description=__doc__)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args()
    log = logging.getLogger("govledger.monitor")
    try:
        settings = load_settings()
        if settings.kafka_bootstrap is None:
            raise ConfigError("the monitor needs GOVLEDGER_KAFKA_BOOTSTRAP")
        watcher = build_watcher(settings)
        # Off the decision path: on a shared host the scheduler serves the processor, the
        # sequencer and the broker first; the monitor catches up when they idle. Before any
        # thread starts: the threads faust and aiokafka make inherit the policy.
        os.nice(settings.monitor_nice)
        if settings.monitor_sched_idle and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        if settings.monitor_metrics_port:
            watcher.metrics.serve(settings.monitor_metrics_port, settings.api_host)
    except (ConfigError, OSError) as exc:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        log.error("%s", exc)
        sys.exit(2)
    ready = args.ready_file

    def on_ready() -> None:
        if ready is not None:
            ready.write_text("ready\n")
    try:
        app = build_app(settings, settings.kafka_bootstrap, watcher,
                        DataDir(settings.data_dir).ledger_db, on_ready)
        sys.argv = [sys.argv[0], "--quiet", "worker", "--without-web", "--loglevel", "warn"]
        app.main()
    except SystemExit as exc:  # faust's worker exits 1 on a crash: not a failed check here
        sys.exit(EXIT_UNAVAILABLE if exc.code == EXIT_INVALID else exc.code)
    except Exception:  # no component expects it: the system's fault (ledger.entrypoint)
        log.exception("the monitor stopped on an unexpected error")
        sys.exit(EXIT_UNAVAILABLE)


if __name__ == "__main__":
    main()
