"""Fail fast: wait for a component's end or the service's stop, whichever comes first.

``govledger up`` runs each component under :func:`watch`: a component that ends while the
service is not stopping raises Unavailable with the reason (the service then stops, exit 3).
:func:`unless_set` bounds any wait by the same stop event, so a request in flight when a
component dies is answered at once instead of running out its own timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from ledger.errors import Unavailable
from ledger.kafka.broker import EmbeddedBroker

T = TypeVar("T")


class Stopping(Exception):
    """The stop event was set before the work finished (the work was cancelled)."""


async def unless_set(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """``work``'s result. Raises Stopping as soon as ``stop`` is set first (``work`` is then
    cancelled), and whatever ``work`` raises."""
    job = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({job, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not job.done():
            job.cancel()
    if not job.done() or job.cancelled():
        raise Stopping
    return job.result()


async def watch(stop: asyncio.Event, ended: Awaitable[str]) -> None:
    """Return once ``stop`` is set. Raises Unavailable with the reason ``ended`` returns when
    it returns first (the component is gone), and whatever ``ended`` raises."""
    try:
        reason = await unless_set(stop, ended)
    except Stopping:
        return
    if not stop.is_set():
        raise Unavailable(reason)


async def broker_exit(broker: EmbeddedBroker) -> str:
    """Why the embedded broker is gone, once it is: exit status and log tail."""
    pid, code = broker.pid, await broker.wait_exit()
    if code is None:  # stopped by us, which the service does only after its stop event
        return "the embedded broker was stopped"
    tail = broker.log_tail(400).replace("\n", " | ")
    return f"the embedded broker (pid {pid}) exited with status {code}; its log: {tail}"
