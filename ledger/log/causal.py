"""Causal order over the stored log: the causes of a leaf (ledger/core/causes.py) read from
its bytes, looked up in the store for the sequencer's hold-back (:func:`store_present`), and
checked over a whole ledger by the audit (:func:`check_order`).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Final, cast

from ledger.core.causes import CAUSAL_KINDS, Cause, Role, causes
from ledger.core.envelope import parse_envelope
from ledger.core.events import Event
from ledger.errors import InvalidEvent, Reason, Rejected
from ledger.log.holdback import Present
from ledger.log.index import ROLE_EVENT, ROLE_SUBJECT
from ledger.log.store import LedgerStore

CHUNK: Final = 4096
_PAYLOAD_KEY: Final = b'{"payload":"'
_EVENT_ID: Final = re.compile("[0-9a-f]{64}")


def _attributes(fields: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(**fields)


_VIEW: Final = json.JSONDecoder(object_hook=_attributes)


def leaf_causes(kind: str, leaf: bytes) -> tuple[Cause, ...]:
    """The causes of a stored (or verified) envelope of ``kind``: :func:`causes` over an
    attribute view of its payload, parsed only for kinds that can have causes. Raises
    Rejected if the bytes are not an envelope whose payload carries its kind's fields."""
    if kind not in CAUSAL_KINDS:
        return ()
    try:
        end = leaf.find(b'"', len(_PAYLOAD_KEY))
        if leaf.startswith(_PAYLOAD_KEY) and end > 0:  # the canonical shape: skip the parse
            payload = binascii.a2b_base64(leaf[len(_PAYLOAD_KEY):end], strict_mode=True)
        else:
            payload = parse_envelope(leaf).payload
        found = causes(cast(Event, _VIEW.decode(payload.decode())))
    except (ValueError, AttributeError, TypeError, binascii.Error) as exc:
        raise InvalidEvent(Reason.MALFORMED, f"cannot read the causes of a {kind}: {exc}"
                           ) from exc
    if not all(isinstance(c.event_id, str) and _EVENT_ID.fullmatch(c.event_id) for c in found):
        raise InvalidEvent(Reason.MALFORMED, f"a {kind} names a cause that is not an event id")
    return found


def store_present(store: LedgerStore) -> Present:
    """The hold-back's question to the writer's store: which causes are leaves already.
    Event ids go through the writer's duplicate probe (its in-memory mirror of the recent
    index tier), decisions through the subject index. Raises Unavailable."""
    def present(asked: Sequence[Cause]) -> set[Cause]:
        events = {bytes.fromhex(c.event_id): c for c in asked if c.role is Role.EVENT}
        decisions = {bytes.fromhex(c.event_id): c for c in asked if c.role is Role.DECISION}
        found: set[Cause] = set()
        if events:
            raws = list(events)
            keys = [int.from_bytes(raw[:8], "big", signed=True) for raw in raws]
            found.update(events[raw] for raw in store.index.stored_ids(keys, raws))
        if decisions:
            found.update(decisions[raw] for raw in
                         store.index.locate(ROLE_SUBJECT, list(decisions)))
        return found
    return present


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """The causal order of a ledger: the first leaf that precedes one of its causes (its
    index and what it waits for), how many leaves had causes, and how many causes are not
    in the log at all (sequenced after the hold-back bound, or never logged)."""

    first_violation: int | None
    what: str | None
    leaves_with_causes: int
    absent_causes: int


def check_order(store: LedgerStore, size: int | None = None) -> OrderCheck:
    """Every leaf below ``size`` (default: all) against its causes (ledger/core/causes.py),
    ``CHUNK`` leaves and a few index queries at a time. A leaf whose bytes do not parse
    is left to the audit's other steps. Raises Unavailable (SQLite)."""
    end = store.tree_size() if size is None else size
    with_causes = absent = 0
    for rows in store.iter_leaf_rows(CHUNK):
        pending: list[tuple[int, Cause]] = []
        for idx, _, kind, _, leaf in rows:
            if not isinstance(idx, int) or idx >= end or not isinstance(leaf, bytes):
                continue
            try:
                found = leaf_causes(str(kind), leaf)
            except Rejected:
                continue
            with_causes += bool(found)
            pending.extend((idx, cause) for cause in found)
        where = _locate(store, [cause for _, cause in pending])
        for idx, cause in pending:
            at = where.get(cause)
            if at is None:
                absent += 1
            elif at > idx:
                what = (f"leaf {idx} precedes its cause at leaf {at} ("
                        f"{'event' if cause.role is Role.EVENT else 'the decision about'} "
                        f"{cause.event_id[:16]})")
                return OrderCheck(idx, what, with_causes, absent)
    return OrderCheck(None, None, with_causes, absent)


def _locate(store: LedgerStore, wanted: Sequence[Cause]) -> dict[Cause, int]:
    """The leaf index that satisfies each cause (absent ones left out)."""
    out: dict[Cause, int] = {}
    for role, index_role in ((Role.EVENT, ROLE_EVENT), (Role.DECISION, ROLE_SUBJECT)):
        raws = {bytes.fromhex(c.event_id): c for c in wanted if c.role is role}
        if raws:
            for raw, idx in store.index.locate(index_role, list(raws)).items():
                out[raws[raw]] = idx
    return out
