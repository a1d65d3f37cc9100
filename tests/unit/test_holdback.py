"""The sequencer's hold-back (ledger/log/holdback.py): causes first, bounded, and the
lowest held offset per partition (what the sequencer may store as consumed)."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.core.causes import Cause, Role
from ledger.log.holdback import CAUSE_MISSING, HOLD_FULL, Arrival, Holdback
from ledger.log.records import LeafRecord

P = ("gov.decisions", 0)


def _id(n: int) -> str:
    return f"{n:064x}"


def arrival(n: int, *causes: int, offset: int = 0, since: float = 0.0, kind: str = "X",
            parent: int | None = None, decision_of: int | None = None) -> Arrival:
    found = tuple(Cause(_id(c), Role.EVENT) for c in causes)
    if decision_of is not None:
        found += (Cause(_id(decision_of), Role.DECISION),)
    record = LeafRecord(_id(n), kind, b"x" * 100, None if parent is None else _id(parent))
    return Arrival(record, found, P, offset, since)


def nothing_stored(asked: Sequence[Cause]) -> set[Cause]:
    return set()


def ids(released: Sequence[object]) -> list[int]:
    return [int(r.arrival.record.event_id, 16) for r in released]  # type: ignore[attr-defined]


def test_an_event_waits_for_its_cause_and_follows_it() -> None:
    hold = Holdback()
    assert hold.admit([arrival(2, 1, offset=5)], nothing_stored) == []
    assert hold.floor(P) == 5
    out = hold.admit([arrival(1, offset=6)], nothing_stored)
    assert ids(out) == [1, 2]
    assert all(r.late is None for r in out)
    assert hold.floor(P) is None and len(hold) == 0


def test_a_chain_arriving_backwards_is_released_causes_first() -> None:
    hold = Holdback()
    out = hold.admit([arrival(4, 3), arrival(3, 2), arrival(2, 1), arrival(1)], nothing_stored)
    assert ids(out) == [1, 2, 3, 4]


def test_a_cause_already_stored_lets_the_event_pass() -> None:
    hold = Holdback()
    out = hold.admit([arrival(2, 1)], lambda asked: {c for c in asked if c.event_id == _id(1)})
    assert ids(out) == [2]


def test_an_event_already_stored_is_not_held_again() -> None:
    hold = Holdback()
    out = hold.admit([arrival(2, 1)], lambda asked: {c for c in asked if c.event_id == _id(2)})
    assert ids(out) == [2]


def test_a_report_waits_for_the_verdict_on_its_execution() -> None:
    hold = Holdback()
    request = Cause(_id(1), Role.EVENT)  # stored; its verdict is not

    def present(asked: Sequence[Cause]) -> set[Cause]:
        return {request} & set(asked)
    assert hold.admit([arrival(3, 1, decision_of=1)], present) == []
    out = hold.admit([arrival(2, 1, kind="ExecutionAllowed", parent=1)], present)
    assert ids(out) == [2, 3]


def test_an_event_whose_cause_never_comes_is_released_after_the_time_bound() -> None:
    hold = Holdback(max_wait_s=2.0)
    hold.admit([arrival(2, 1, since=10.0), arrival(3, 2, since=11.0)], nothing_stored)
    assert hold.expire(11.9) == []
    out = hold.expire(12.0)
    assert [(n, r.late) for n, r in zip(ids(out), out, strict=True)] == [
        (2, CAUSE_MISSING), (3, None)]  # its waiter follows it, in order


def test_the_count_and_byte_bounds_release_the_oldest() -> None:
    hold = Holdback(max_events=2)
    out = hold.admit([arrival(10, 1), arrival(11, 1), arrival(12, 1)], nothing_stored)
    assert [(n, r.late) for n, r in zip(ids(out), out, strict=True)] == [(10, HOLD_FULL)]
    by_bytes = Holdback(max_bytes=250)
    out = by_bytes.admit([arrival(10, 1), arrival(11, 1), arrival(12, 1)], nothing_stored)
    assert ids(out) == [10] and by_bytes.bytes == 200


def test_the_floor_is_the_lowest_offset_still_held() -> None:
    hold = Holdback()
    hold.admit([arrival(2, 1, offset=3), arrival(5, 4, offset=7)], nothing_stored)
    assert hold.floor(P) == 3
    hold.admit([arrival(1, offset=9)], nothing_stored)
    assert hold.floor(P) == 7
    assert hold.floor(("gov.requests", 0)) is None


def test_a_second_copy_of_a_held_event_is_not_held_twice() -> None:
    hold = Holdback()
    hold.admit([arrival(2, 1, offset=1)], nothing_stored)
    assert hold.admit([arrival(2, 1, offset=4)], nothing_stored) == []
    assert len(hold) == 1 and hold.floor(P) == 1
