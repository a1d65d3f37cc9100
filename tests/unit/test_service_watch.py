"""Service._watch: a task the service awaits only when it stops (the sequencer child's
metrics relay) stops the service, naming it, if it ends with an error; ending normally or
being cancelled does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger.config import Settings
from ledger.server.service import Service


async def ended(service: Service, outcome: BaseException | None) -> None:
    async def work() -> None:
        if outcome is not None:
            raise outcome

    task = asyncio.create_task(work())
    service._watch("sequencer metrics", task)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop pass


def test_a_watched_task_that_fails_stops_the_service_naming_it(tmp_path: Path) -> None:
    service = Service(Settings(data_dir=tmp_path))
    asyncio.run(ended(service, OSError("pipe read failed")))
    assert service.failed == "sequencer metrics"
    assert service.failure == "sequencer metrics failed: pipe read failed"
    assert service.stop_event.is_set()


def test_a_watched_task_that_ends_or_is_cancelled_stops_nothing(tmp_path: Path) -> None:
    service = Service(Settings(data_dir=tmp_path))
    asyncio.run(ended(service, None))
    asyncio.run(ended(service, asyncio.CancelledError()))
    assert service.failed is None
    assert not service.stop_event.is_set()
