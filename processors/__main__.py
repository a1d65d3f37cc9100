"""``python -m processors [--ready-file F]``: one decision worker, settings from GOVLEDGER_*.

What ``govledger up`` starts as its processor child process: it imports only the decision side
(no HTTP stack), so it is ready quickly, and it writes ``--ready-file`` once restored and
connected. SIGTERM/SIGINT stop it cleanly; Unavailable exits 3, a configuration error 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ledger.config import Settings, load_settings
from ledger.errors import ConfigError, GovLedgerError, Unavailable
from ledger.telemetry import configure_tracing, log_handler
from processors.app import build_worker


async def serve(settings: Settings, ready_file: Path | None) -> None:
    if settings.kafka_bootstrap is None:
        raise ConfigError("python -m processors needs GOVLEDGER_KAFKA_BOOTSTRAP")
    worker = build_worker(settings, settings.kafka_bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    try:
        if ready_file is not None:
            ready_file.write_text("ready\n")
        await worker.run(stop)
    finally:
        await worker.stop()
        worker.journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m processors", description=__doc__)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args()
    try:
        settings = load_settings()
    except ConfigError as exc:
        logging.basicConfig(level=logging.INFO, handlers=[log_handler("text")])
        logging.getLogger("govledger.processor").error("%s", exc)
        sys.exit(2)
    # The level `govledger --log-level` chose reaches this child as GOVLEDGER_LOG_LEVEL.
    level = os.environ.get("GOVLEDGER_LOG_LEVEL", "info").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        handlers=[log_handler(settings.log_format)])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    configure_tracing("govledger-processor")
    try:
        asyncio.run(serve(settings, args.ready_file))
    except Unavailable as exc:
        logging.getLogger("govledger.processor").error("unavailable: %s", exc)
        sys.exit(3)
    except ConfigError as exc:
        logging.getLogger("govledger.processor").error("%s", exc)
        sys.exit(2)
    except GovLedgerError as exc:
        logging.getLogger("govledger.processor").error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
