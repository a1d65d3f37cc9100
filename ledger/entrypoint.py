"""How a component runs as a process of its own (the children of ``govledger up``:
``python -m processors``, ``python -m ledger.server.sequencer_process``): settings from
``GOVLEDGER_*``, logs to stderr, tracing, and an exit status that says how it failed, which
the parent turns back into the error (ledger/server/children.py ``child_failed``).
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
from ledger.errors import ConfigError, GovLedgerError, Unavailable
from ledger.telemetry import configure_tracing, log_handler

EXIT_FAILED_CHECK = 1  # any other GovLedgerError: e.g. a ledger that does not verify
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def child_main(prog: str, description: str | None, logger: str, service_name: str,
               serve: Callable[[Settings, Path | None], Coroutine[object, object, None]],
               ) -> NoReturn:
    """The ``main`` of a child (``python -m MODULE [--ready-file F]``): settings from
    ``GOVLEDGER_*``, logs to stderr at the level ``govledger --log-level`` passed down as
    ``GOVLEDGER_LOG_LEVEL``, tracing as ``service_name``; runs ``serve(settings, F)`` and
    exits 0, or with the status its error maps to (EXIT_*)."""
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
    configure_tracing(service_name)
    try:
        asyncio.run(serve(settings, args.ready_file))
    except Unavailable as exc:
        log.error("unavailable: %s", exc)
        sys.exit(EXIT_UNAVAILABLE)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    except GovLedgerError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_FAILED_CHECK)
    sys.exit(0)
