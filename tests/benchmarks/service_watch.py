"""What a benchmark client of ``govledger up`` sees: when each decision arrived (and which
decisions), sends in bulk or as a stream with a bounded window through the SDK, and when the
ledger holds a leaf (polled read-only). Used by bench_governance.py; not a pytest file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from ledger.core.envelope import event_id, parse_envelope
from ledger.errors import Unavailable
from ledger.sdk.client import Client, Decision
from tests.benchmarks.bench_service import LedgerWatcher, ServiceUnderTest

Item = tuple[str, bytes, str]
"""A pre-signed event: (its id, its envelope, its Kafka key)."""


def now() -> datetime:
    return datetime.now(UTC)


def envelope_id(envelope: bytes) -> str:
    return event_id(parse_envelope(envelope).payload)


def cpu_text(cpu: dict[str, float]) -> str:
    """One line: microseconds of CPU per decision by process, and their sums."""
    parts = [f"{role} {us:.0f}" for role, us in cpu.items()]
    service = sum(us for role, us in cpu.items() if role != "load generator")
    return (f"    CPU per decision (us): {', '.join(parts)}; service total {service:.0f}, "
            f"all {sum(cpu.values()):.0f}")


class Stamps:
    """Every decision the client receives, by subject: when the first arrived, the first
    one, the distinct decision ids (two would be two different answers to one input)."""

    def __init__(self, client: Client) -> None:
        self.at: dict[str, float] = {}
        self.first: dict[str, Decision] = {}
        self.ids: dict[str, set[str]] = {}
        self.deliveries = 0
        client.on_decision.append(self._seen)

    def _seen(self, decision: Decision) -> None:
        self.at.setdefault(decision.subject_id, time.perf_counter())
        self.first.setdefault(decision.subject_id, decision)
        self.ids.setdefault(decision.subject_id, set()).add(decision.verified.event_id)
        self.deliveries += 1


async def send_all(client: Client, stream: str, items: Sequence[Item], chunk: int = 500
                   ) -> None:
    """Produce ``items``, ``chunk`` sends in flight at a time. Raises Unavailable."""
    for i in range(0, len(items), chunk):
        await asyncio.gather(*(client.send_raw(stream, env, key)
                               for _, env, key in items[i:i + chunk]))


async def decided(client: Client, ids: Sequence[str], timeout: float) -> list[Decision]:
    """The verified decision for every id. Raises Unavailable if one is not there in time."""
    return list(await asyncio.gather(*(client.decision(i, timeout) for i in ids)))


def positions(verdicts: Sequence[Decision]) -> tuple[int, int]:
    """The lowest and highest governance position the decisions name; (-1, -1) when one
    names none."""
    seen = [v.event.governance for v in verdicts]  # type: ignore[attr-defined]
    if None in seen:
        return -1, -1
    return min(seen), max(seen)


async def stream(client: Client, items: Sequence[Item], window: int,
                 at_half: Callable[[], None] | None = None) -> list[str]:
    """Produce ``items`` with at most ``window`` undecided; call ``at_half`` once half are
    produced. Returns the ids with no decision (lost)."""
    work = iter(enumerate(items))
    lost: list[str] = []

    async def one() -> None:
        for i, (rid, envelope, key) in work:
            await client.send_raw("requests", envelope, key)
            if i == len(items) // 2 and at_half is not None:
                at_half()
            try:
                await client.decision(rid, 120)
            except Unavailable:
                lost.append(rid)
    await asyncio.gather(*(one() for _ in range(window)))
    return lost


def rate(stamps: Stamps, ids: Sequence[str], start: float, end: float) -> str:
    """Decisions/s of ``ids`` that arrived in [start, end), and how many."""
    n = sum(start <= stamps.at[i] < end for i in ids if i in stamps.at)
    return f"{n / max(end - start, 1e-9):,.0f}/s ({n} in {end - start:.2f} s)"


async def settled(service: ServiceUnderTest, leaf_ids: Sequence[str]) -> float:
    """Seconds until a signed checkpoint covers every one of ``leaf_ids`` (polled)."""
    watcher = LedgerWatcher(service.data / "ledger.db")
    t0, left = time.perf_counter(), list(leaf_ids)
    try:
        while left:
            left = sorted(set(left) - set(await asyncio.to_thread(watcher.covered, left)))
            await asyncio.sleep(0.02 if left else 0)
    finally:
        watcher.close()
    return time.perf_counter() - t0


async def in_ledger(service: ServiceUnderTest, leaf_id: str, t0: float) -> tuple[float, float]:
    """Seconds from ``t0`` until ``leaf_id`` is a leaf of ledger.db, and until a signed
    checkpoint covers it (polled every 5 ms; a leaf first seen covered counts as appended
    then)."""
    watcher = LedgerWatcher(service.data / "ledger.db")
    appended = 0.0
    try:
        while not await asyncio.to_thread(watcher.covered, [leaf_id]):
            if not appended and leaf_id in watcher.index:
                appended = time.perf_counter() - t0
            await asyncio.sleep(0.005)
    finally:
        watcher.close()
    covered = time.perf_counter() - t0
    return appended or covered, covered
