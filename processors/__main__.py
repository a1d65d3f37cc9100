"""``python -m processors [--ready-file F]``: one decision worker, settings from GOVLEDGER_*.

What ``govledger up`` starts as its processor child process: it imports only the decision side
(no HTTP stack), so it is ready quickly, and it writes ``--ready-file`` once restored and
connected. SIGTERM/SIGINT stop it cleanly; exit status by whose fault
(ledger.entrypoint.child_main): 1 a failed check, 2 a configuration error, 3 Unavailable
or any error no component expects.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from ledger.config import Settings
from ledger.entrypoint import child_main
from ledger.errors import ConfigError
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
    child_main("python -m processors", __doc__, "govledger.processor",
               "govledger-processor", serve)


if __name__ == "__main__":
    main()
