"""The one recomputation of a ledger from its stored leaf bytes, shared by the audit and
the sequencer's start-up check (ledger/log/audit.py: the steps, the two callers).

:func:`recompute` streams ``leaves`` and ``hash_pages`` in index order, ``CHUNK`` rows at a
time: contiguous indexes, every leaf and stored node hash recomputed (RFC 9162 2.1.1), the
root at each checkpoint size, each leaf's stored event id, kind and parent against its
envelope bytes (:func:`leaf_columns`, or a ``verify`` callable), then the lookup index and
duplicate ids. Every finding is a :class:`Problem`; nothing is raised for a divergence.
Memory: 18 bytes per leaf (the index keys step 6 compares).
"""

from __future__ import annotations

import binascii
import hashlib
import json
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Final, cast

from ledger.core import merkle
from ledger.core.envelope import PAYLOAD_TYPES, parse_envelope
from ledger.core.events import Event
from ledger.core.merkle import CompactRange
from ledger.errors import Rejected
from ledger.log.index import DECISION_KINDS, ROLE_EVENT, ROLE_SUBJECT
from ledger.log.pages import PAGE, iter_pages
from ledger.log.store import LedgerStore

if TYPE_CHECKING:
    from ledger.log.sequencer import Verify


MAX_PROBLEMS: Final = 1000  # stop checking envelopes one by one past this (a wrong keyring)
CHUNK: Final = 4096
_PAGE_BYTES: Final = PAGE * merkle.HASH_SIZE
_H: Final = merkle.HASH_SIZE
Columns = tuple[bytes, str, bytes | None]
"""(event id, kind, parent_ref) of a leaf, as the ``leaves`` row stores them."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A finding. ``exact``: ``index`` is the divergent leaf itself, not the start of the
    range a checkpoint covers."""

    index: int | None
    what: str
    checkpoint: int | None = None
    exact: bool = True


# -- step 4 without the signature: the stored columns from the envelope bytes ---------------


def _attributes(fields: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(**fields)


_ATTRIBUTES: Final = json.JSONDecoder(object_hook=_attributes)
_PAYLOAD_KEY: Final = b'{"payload":"'
_AT_PAYLOAD: Final = len(_PAYLOAD_KEY)
_TYPE_KEY: Final = b'","payloadType":"'


def leaf_columns(leaf: bytes) -> Columns | None:
    """The (event id, kind, parent_ref) the sequencer stores for these envelope bytes, read
    without checking the signature (the signed checkpoint binds the bytes); None if the
    bytes are not an envelope. The parent comes from the event class's own ``parent_ref()``,
    run on an attribute view of the payload instead of a validated model (it only reads
    attributes; a payload that lacks them gives None): 11 us a leaf where reading the
    envelope and validating the model takes 30 us (same load)."""
    # The canonical envelope starts {"payload":"B64","payloadType":"TYPE", (the key order
    # ledger.core.envelope writes); two finds beat a regex over the base64 by ~2 us a leaf.
    end = leaf.find(b'"', _AT_PAYLOAD)
    type_end = leaf.find(b'"', end + len(_TYPE_KEY))
    try:
        if (leaf.startswith(_PAYLOAD_KEY) and leaf.startswith(_TYPE_KEY, end) and type_end > 0
                and (model := PAYLOAD_TYPES.get(
                    leaf[end + len(_TYPE_KEY):type_end].decode())) is not None):
            payload = binascii.a2b_base64(leaf[_AT_PAYLOAD:end], strict_mode=True)
        else:  # not the canonical shape the sequencer stores: the strict parse says why
            parsed = parse_envelope(leaf)
            model, payload = PAYLOAD_TYPES[parsed.payload_type], parsed.payload
    except (Rejected, binascii.Error):
        return None
    parent: object = None
    if model.parent_ref is not Event.parent_ref:
        try:
            view = _ATTRIBUTES.decode(payload.decode())
            parent = model.parent_ref(cast(Event, view))
            parent = None if parent is None else bytes.fromhex(parent)
        except (ValueError, AttributeError, TypeError):
            return None
    return hashlib.sha256(payload).digest(), model.KIND, cast(bytes | None, parent)


def _verified_columns(verify: Verify, leaf: bytes) -> Columns:
    record = verify(leaf)
    return (bytes.fromhex(record.event_id), record.kind,
            None if record.parent_ref is None else bytes.fromhex(record.parent_ref))


# -- steps 2-5: one pass over the leaves and the stored hashes -------------------------------


class _StoredHashes:
    """The stored hashes as one byte stream in hash-number order, read page by page."""

    def __init__(self, store: LedgerStore, problems: list[Problem]) -> None:
        self._pages, self._problems = iter_pages(store.conn), problems
        self._buf, self._next, self._done = bytearray(), 0, False

    def take(self, count: int) -> bytes:
        """The next ``count`` hashes, joined; shorter if the stream ends or breaks."""
        need = count * _H
        while len(self._buf) < need and not self._done:
            row = next(self._pages, None)
            if row is None:
                self._done = True
                break
            page, blob = row
            if (page != self._next or not isinstance(blob, bytes) or len(blob) % _H
                    or not 0 < len(blob) <= _PAGE_BYTES):
                self._problems.append(Problem(None, f"hash page {self._next} is missing, "
                                                    "misplaced or malformed"))
                self._done = True
                break
            self._buf += blob
            # Only the last page may be partial: a page after it is out of place.
            self._next = page + 1 if len(blob) == _PAGE_BYTES else -1
        out = bytes(self._buf[:need])
        del self._buf[:need]
        return out

    def more(self) -> bool:
        return bool(self._buf) or (not self._done and bool(self.take(1)))


@dataclass(slots=True)
class Recomputed:
    """What :func:`recompute` found: ``problems`` (first first), the leaves read, the
    envelopes verified, and per leaf the lookup keys step 6 expects."""

    problems: list[Problem] = field(default_factory=list)
    size: int = 0
    envelopes: int = 0
    event_keys: array[int] = field(default_factory=lambda: array("q"))
    subject_keys: array[int] = field(default_factory=lambda: array("q"))
    has_subject: bytearray = field(default_factory=bytearray)


def recompute(store: LedgerStore, roots: Mapping[int, bytes], *, verify: Verify | None = None,
              verify_from: int = 0, first_only: bool = False) -> Recomputed:
    """Steps 2-6 of ledger/log/audit.py's docstring against the checkpoint ``roots`` (size -> signed
    root, notes already verified). ``verify`` checks the envelopes of leaves from
    ``verify_from`` on; ``first_only`` stops at the first chunk with a problem (the start-up
    check needs the first divergence, not all). Raises Unavailable (SQLite)."""
    out, compact = Recomputed(), CompactRange()
    problems = out.problems
    stored = _StoredHashes(store, problems)
    sizes = sorted(roots)
    cp, prev_good, in_step = 0, 0, True
    while cp < len(sizes) and sizes[cp] == 0:
        if roots[0] != merkle.EMPTY_ROOT:
            problems.append(Problem(0, "checkpoint 0 is not the empty root", 0))
        cp += 1
    for rows in store.iter_leaf_rows(CHUNK):
        start, gap = compact.size, False
        if rows[0][0] != start or rows[-1][0] != start + len(rows) - 1:
            n = next(n for n, row in enumerate(rows) if row[0] != start + n)
            problems.append(Problem(start + n, f"leaf {start + n} is missing (next stored "
                                               f"is {rows[n][0]!r})"))
            rows, gap = rows[:n], True
        at = 0
        while at < len(rows):  # segments end at checkpoint sizes, to compare each root
            end = len(rows) if cp >= len(sizes) else min(len(rows), sizes[cp] - start)
            segment = rows[at:end]
            if not _check_rows(segment, out, verify, verify_from):
                out.size = compact.size
                return out  # a row without leaf bytes: nothing after it can be hashed
            first = merkle.stored_hash_count(compact.size)
            new = b"".join(compact.append_leaves([cast(bytes, row[4]) for row in segment]))
            if in_step and (found := stored.take(len(new) // _H)) != new:
                in_step = False  # the stored stream is out of step from here on
                _hash_problem(first, new, found, problems)
            if cp < len(sizes) and sizes[cp] == compact.size:
                if compact.root() != roots[compact.size]:
                    problems.append(Problem(prev_good, f"root at checkpoint {compact.size} "
                                            f"differs from the leaves in [{prev_good}, "
                                            f"{compact.size})", compact.size, False))
                else:
                    prev_good = compact.size
                cp += 1
            at = end
        if gap or (first_only and problems):
            break
    out.size = compact.size
    if in_step and stored.more():
        problems.append(Problem(out.size, f"hashes stored beyond the {out.size} leaves"))
    for late in sizes[cp:]:
        problems.append(Problem(out.size, f"checkpoint at {late} but only {out.size} leaves: "
                                          "the tail is missing", late))
    if not (first_only and problems):
        _check_index(store, out)
    return out


def _check_rows(rows: list[tuple[object, ...]], out: Recomputed, verify: Verify | None,
                verify_from: int) -> bool:
    """Step 4 for each row, and the lookup keys step 6 expects of it (from the stored
    columns: what the writer indexed). False at a row without 32-byte id and leaf bytes."""
    problems, from_bytes = out.problems, int.from_bytes
    event_keys, subject_keys, has_subject = out.event_keys, out.subject_keys, out.has_subject
    for idx, raw_id, kind, parent, leaf in rows:
        if not (isinstance(raw_id, bytes) and len(raw_id) == _H and isinstance(leaf, bytes)
                and (parent is None or isinstance(parent, bytes))):
            problems.append(Problem(cast(int, idx), f"leaf {idx} has the wrong column types"))
            return False
        stored = (raw_id, kind, parent)
        try:
            if verify is not None and cast(int, idx) >= verify_from \
                    and len(problems) < MAX_PROBLEMS:
                out.envelopes += 1
                ok = _verified_columns(verify, leaf) == stored
            else:
                ok = leaf_columns(leaf) == stored
            if not ok:
                problems.append(Problem(cast(int, idx), "stored event id, kind or parent "
                                                        "differs from the envelope"))
        except Rejected as exc:
            problems.append(Problem(cast(int, idx), f"envelope does not verify: {exc}"))
        event_keys.append(from_bytes(raw_id[:8], "big", signed=True))  # index.lookup_key
        subject = isinstance(parent, bytes) and kind in DECISION_KINDS
        subject_keys.append(from_bytes(parent[:8], "big", signed=True)
                            if isinstance(parent, bytes) and subject else 0)
        has_subject.append(subject)
    return True


def _hash_problem(first: int, new: bytes, found: bytes, problems: list[Problem]) -> None:
    """Name the first stored hash (numbered from ``first``) that differs or is missing."""
    n = next((i for i in range(0, min(len(new), len(found)), _H)
              if new[i:i + _H] != found[i:i + _H]), min(len(new), len(found)))
    h = first + n // _H
    leaf = _leaf_of_hash(h)
    node = merkle.appended_nodes(leaf)[h - merkle.stored_hash_count(leaf)]
    problems.append(Problem(leaf, f"stored hash of node ({node.level}, {node.index}) "
                                  f"{'differs from' if n < len(found) else 'is missing for'} "
                                  "the leaf bytes"))


def _leaf_of_hash(h: int) -> int:
    """The leaf whose append stores hash number ``h`` (binary search on stored_hash_count)."""
    lo, hi = 0, h + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if merkle.stored_hash_count(mid + 1) <= h:
            lo = mid + 1
        else:
            hi = mid
    return lo


# -- steps 2 (duplicates) and 6: the lookup index ----------------------------------------------


def _check_index(store: LedgerStore, out: Recomputed) -> None:
    """Every leaf below the index's ``indexed`` mark has exactly its event row and, for a
    decision, its subject row, and no row names anything else. Leaves past the mark are
    indexed by the next writer open (LookupIndex.catch_up)."""
    events, subjects, has_subject = out.event_keys, out.subject_keys, out.has_subject
    indexed = min(store.index.indexed(), len(events))
    seen, seen_subject = bytearray(indexed), bytearray(indexed)
    stray: tuple[object, ...] | None = None
    for row in store.index.iter_rows():
        role, k, idx = row
        if not isinstance(idx, int) or not 0 <= idx < indexed:
            stray = stray or row
        elif role == ROLE_EVENT and events[idx] == k and not seen[idx]:
            seen[idx] = 1
        elif role == ROLE_SUBJECT and has_subject[idx] and subjects[idx] == k \
                and not seen_subject[idx]:
            seen_subject[idx] = 1
        else:
            stray = stray or row
    if stray is not None:
        at = stray[2] if isinstance(stray[2], int) and 0 <= stray[2] < indexed else None
        out.problems.append(Problem(at, f"lookup index row (role, key, leaf) {stray} names "
                                        "no such leaf, or repeats one"))
    if (missing := seen.find(0)) >= 0:
        out.problems.append(Problem(missing, f"the lookup index lacks the event id of leaf "
                                             f"{missing}"))
    lacking = (int.from_bytes(has_subject[:indexed], "little")
               ^ int.from_bytes(seen_subject, "little"))
    if lacking:
        at = ((lacking & -lacking).bit_length() - 1) // 8
        out.problems.append(Problem(at, f"the lookup index lacks the decision subject of "
                                        f"leaf {at}"))
    _check_unique(store, out)


def _check_unique(store: LedgerStore, out: Recomputed) -> None:
    """No event id twice (the writer enforces it by lookups, not by a constraint)."""
    events = out.event_keys
    if len(set(events)) == len(events):
        return
    shared = {k for k, count in Counter(events).items() if count > 1}  # an 8-byte prefix
    ids: set[str] = set()
    for idx, k in enumerate(events):
        if k in shared:
            event_id = store.leaf(idx).event_id
            if event_id in ids:
                out.problems.append(Problem(idx, f"event {event_id[:16]} is stored twice"))
            ids.add(event_id)
