"""How a component runs as a process of its own (the children of ``govledger up``:
``python -m processors``, ``python -m ledger.server.sequencer_process``): settings from
``GOVLEDGER_*``, logs to stderr, tracing, and an exit status that says how it failed, which
the parent turns back into the error (``ledger.errors.error_for_exit``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import NoReturn

from ledger.config import Settings, load_settings
from ledger.errors import EXIT_CONFIG, EXIT_UNAVAILABLE, ConfigError, GovLedgerError, exit_status
from ledger.telemetry import configure_tracing, log_handler


def child_main(prog: str, description: str | None, logger: str, service_name: str,
               serve: Callable[[Settings, Path | None], Coroutine[object, object, None]],
               ) -> NoReturn:
    """The ``main`` of a child (``python -m MODULE [--ready-file F]``): settings from
    ``GOVLEDGER_*``, logs to stderr at the level ``govledger --log-level`` passed down as
    ``GOVLEDGER_LOG_LEVEL``, tracing as ``service_name``; runs ``serve(settings, F)`` and
    exits 0, or with the status its error maps to (ledger.errors.exit_status); any other
    exception is EXIT_UNAVAILABLE with its traceback logged (Python's own status for an
    uncaught one, 1, would read as a failed check)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args()
    log = logging.getLogger(logger)
    try:
        settings = load_settings()
    except ConfigError as exc:
        logging.basicConfig(level=logging.INFO, handlers=[log_handler("text")])
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    level = os.environ.get("GOVLEDGER_LOG_LEVEL", "info").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        handlers=[log_handler(settings.log_format)])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        configure_tracing(service_name)  # may fail too (an exporter that cannot load)
        asyncio.run(serve(settings, args.ready_file))
    except GovLedgerError as exc:
        log.error("%s%s", "unavailable: " if exit_status(exc) == EXIT_UNAVAILABLE else "", exc)
        sys.exit(exit_status(exc))
    except Exception:  # no component expects it: the system's fault, not a failed check
        log.exception("%s stopped on an unexpected error", prog)
        sys.exit(EXIT_UNAVAILABLE)
    sys.exit(0)
