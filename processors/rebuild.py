"""The processor journal rebuilt from the ledger: the ledger is the system of record
(DESIGN.md section 7; processors/reconcile.py is the other direction).

A journal that lacks decisions the ledger holds (the file was deleted, lost with a disk, or
restored from an old backup) would decide on a state that forgot grants, revocations, uses
and nonces: a replayed nonce could be granted and a resent request denied REPLAY, two
decisions for one id. :meth:`Rebuild.run` finds every authority-signed decision in the
ledger whose subject the journal lacks and journals it again from the ledger's bytes, with
its request (also a leaf) as the input, before the engine restores. The engine then
restores those entries like any other: it re-verifies every grant, revocation and use under
the authority key.

A decision whose request is not in the ledger can be rebuilt without the request only if
the request's nonce no longer matters: it was refused before verification (its denial names
no lineage root; it spent no nonce), or it was decided longer ago than the replay memory
keeps nonces (``Limits.nonce_until`` at the latest ``issued_at`` the engine accepts).
Otherwise the worker refuses to start (``Unavailable``) and says until when:
it never decides on a state that forgot something. Nothing is imported from a ledger that a
running sequencer has not verified (the caller says whether it has).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TypeVar

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import read_stored, verify_stored
from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event, RevocationApplied
from ledger.core.execution_events import ExecutionAllowed, ExecutionRefused
from ledger.core.keys import KeyRing
from ledger.core.streams import DECIDED_STREAM_OF, Stream
from ledger.errors import Reason, Rejected, Unavailable
from ledger.log.records import StoredLeaf
from ledger.log.store import LedgerStore
from processors.core.freshness import Limits
from processors.core.outcomes import Outcome, Output
from processors.journal import Journal

log = logging.getLogger("govledger.processor")

LEDGER_CHECKED = "ledger_checked"
"""Journal meta: every authority decision among the first N ledger leaves is journaled."""

# The authority's decisions about an input, and where the worker publishes each.
_DECISION_STREAM: dict[type[Event], Stream] = {
    AuthorizationGranted: Stream.DECISIONS, AuthorizationDenied: Stream.DECISIONS,
    RevocationApplied: Stream.DECISIONS, ExecutionAllowed: Stream.VERDICTS,
    ExecutionRefused: Stream.VERDICTS}
DECISION_KINDS = tuple(kind.KIND for kind in _DECISION_STREAM)
_RANK = {AuthorizationGranted: 0, AuthorizationDenied: 0, RevocationApplied: 1,
         ExecutionAllowed: 2, ExecutionRefused: 2}
CHUNK = 2_000  # ledger leaves per journal query
T = TypeVar("T")


class Rebuild:
    """Rebuilds ``journal`` from ``ledger`` (both open; the caller owns them)."""

    def __init__(self, journal: Journal, ledger: LedgerStore, *, keyring: KeyRing,
                 authority_identity: str, limits: Limits) -> None:
        self.journal = journal
        self.ledger = ledger
        self.keyring = keyring
        self.authority_identity = authority_identity
        self.limits = limits

    def run(self, now: datetime, *, trusted: Callable[[], bool]) -> int:
        """Journal every authority decision of the ledger that the journal lacks (module
        docstring). Call before the engine restores. Returns how many entries were added.

        Raises Unavailable when decisions are lacking and the ledger is not one a running
        sequencer verified, when a decision cannot be rebuilt without forgetting a nonce
        that still matters, or on a SQLite error. (With nothing lacking an unverified
        ledger is only read: an edit of it cannot add anything to the journal.)
        """
        size = self.ledger.tree_size()
        checked = self.journal.meta(LEDGER_CHECKED) or 0
        if checked > size:
            log.warning("the ledger has %d leaves, fewer than the %d this journal was checked "
                        "against (replaced or restored?): checking it all again", size,
                        checked)
            checked = 0
        lacking = self._lacking(checked, size)
        # Asked after the scan, not before: a sequencer that stopped during it (a large
        # ledger takes seconds) no longer vouches for what was read.
        verified = trusted()
        if lacking and not verified:  # what is imported must come from a verified ledger
            raise Unavailable(
                f"the journal lacks {len(lacking)} decisions {self.ledger.path} holds, and "
                "that ledger is not verified against its signed checkpoint by a running "
                "sequencer (its start-up check has not passed, or no sequencer holds the "
                "ledger, so it may have changed since): the processor rebuilds only from a "
                "verified ledger; start the sequencer first")
        if lacking:
            log.warning("the ledger holds %d decisions this journal lacks (journal deleted, "
                        "lost or restored from an older copy): rebuilding them from the ledger",
                        len(lacking))
            self.journal.append(self._entries(lacking, now))
        if verified:
            self.journal.set_meta(LEDGER_CHECKED, size)
        return len(lacking)

    def _lacking(self, start: int, size: int) -> dict[str, list[StoredLeaf]]:
        """Authority decisions among leaves [start, size) whose subject is not journaled,
        grouped by subject in ledger order. Raises Unavailable where the journal holds
        another decision for a subject than the ledger does."""
        lacking: dict[str, list[StoredLeaf]] = {}
        leaves = self.ledger.iter_kinds(DECISION_KINDS, start, size)
        for chunk in chunks(leaves, CHUNK, None):
            subjects = [leaf.parent_ref for leaf in chunk if leaf.parent_ref is not None]
            known = self.journal.present(subjects)
            for leaf in chunk:
                if leaf.parent_ref is None:
                    continue
                if leaf.parent_ref not in known:
                    lacking.setdefault(leaf.parent_ref, []).append(leaf)
                else:
                    self._agree(leaf)
        return lacking

    def _agree(self, leaf: StoredLeaf) -> None:
        """The journal's outcome for a subject the ledger decided holds the ledger's bytes
        (one decision per subject, DESIGN.md section 6), if the authority signed them."""
        assert leaf.parent_ref is not None
        outcome = self.journal.recall(leaf.parent_ref)
        if outcome is None or any(o.value == leaf.leaf for o in outcome.outputs):
            return
        if any((stored := read_stored(o.value)) is not None and stored.model is ApprovalRequired
               for o in outcome.outputs):
            return  # its end (grant or denial) is journaled with an approval or a later input
        if self._decision(leaf) is not None:
            raise Unavailable(
                f"the ledger's {leaf.kind} at index {leaf.index} about {leaf.parent_ref[:16]} "
                "is not the decision the processor journal holds for it: the journal or the "
                "ledger was altered, or another processor with this authority key decided it")

    def _entries(self, lacking: dict[str, list[StoredLeaf]],
                 now: datetime) -> list[tuple[Stream, datetime, bytes, Outcome]]:
        """Journal entries for the lacking decisions, in an order restore accepts: by
        decision time, grants before revocations before verdicts, then ledger order."""
        inputs = self._inputs(lacking)
        rebuilt: list[tuple[tuple[datetime, int, int], tuple[Stream, datetime, bytes, Outcome]]]
        rebuilt, stuck = [], []
        for subject, leaves in lacking.items():
            decisions = [(d, leaf) for leaf in leaves if (d := self._decision(leaf)) is not None]
            if not decisions:
                continue
            first = decisions[0][0]
            arrival = first.issued_at
            outputs = tuple(Output(_DECISION_STREAM[type(d)], _key(d), leaf.leaf)
                            for d, leaf in decisions)
            allow, reasons = _verdict(first)
            outcome = Outcome(subject, outputs, allow, reasons)
            raw = inputs.get(subject)
            stream = Stream.DECISIONS  # no input effect: see the module docstring
            if raw is not None:
                stored = read_stored(raw)
                stream = DECIDED_STREAM_OF.get(stored.model, stream) if stored else stream
            elif not _spent_no_nonce(first) and self._nonce_horizon(arrival) > now:
                stuck.append((subject, self._nonce_horizon(arrival)))
                continue
            rank = (arrival, _RANK[type(first)], decisions[0][1].index)
            rebuilt.append((rank, (stream, arrival, raw or b"", outcome)))
        if stuck:
            subject, until = max(stuck, key=lambda s: s[1])
            raise Unavailable(
                f"the journal lacks {len(stuck)} recent decisions the ledger holds, and the "
                f"ledger lacks their requests (e.g. {subject[:16]}), whose nonces still "
                f"matter: the processor cannot rebuild a state that remembers them. It will "
                f"start once the sequencer has logged those requests, or after "
                f"{until.isoformat()} when their nonces expire")
        rebuilt.sort(key=lambda item: item[0])
        return [entry for _, entry in rebuilt]

    def _nonce_horizon(self, arrival: datetime) -> datetime:
        """The latest moment the engine may still remember a nonce first used at
        ``arrival``, whatever the request's ``issued_at`` was (it is not known without the
        request): the engine's own rule (Limits.nonce_until) at the latest ``issued_at`` it
        accepts."""
        return self.limits.nonce_until(arrival + self.limits.max_clock_skew, arrival)

    def _inputs(self, lacking: dict[str, list[StoredLeaf]]) -> dict[str, bytes]:
        subjects = list(lacking)
        present = self.ledger.contains(subjects)
        found: dict[str, bytes] = {}
        for subject in present:
            leaf = self.ledger.find(subject)
            if leaf is not None:
                found[subject] = leaf.leaf
        return found

    def _decision(self, leaf: StoredLeaf) -> Event | None:
        """The authority's decision in ``leaf``; None (and a warning) for a leaf of a
        decision kind that the authority did not sign: not a decision of this processor."""
        try:
            event, _ = verify_stored(leaf.leaf, self.keyring, self.authority_identity)
        except Rejected as exc:
            log.warning("ledger leaf %d is a %s not signed by the authority (%s): not "
                        "rebuilt", leaf.index, leaf.kind, exc)
            return None
        return event


def _key(decision: Event) -> bytes:
    """The partition key the engine gave this decision: its lineage root, else its subject."""
    return (decision.lineage_root() or decision.parent_ref() or "").encode()


def _verdict(decision: Event) -> tuple[bool, tuple[Reason, ...]]:
    if isinstance(decision, AuthorizationDenied | ExecutionRefused):
        return False, decision.reasons
    return True, ()


def _spent_no_nonce(decision: Event) -> bool:
    """Decisions whose input spent no nonce: a revocation's (revocations carry none), and
    a denial of input refused before it verified, which names no lineage root (engine
    ``_reject_input``)."""
    if isinstance(decision, RevocationApplied):
        return True
    return isinstance(decision, AuthorizationDenied) and decision.root is None


def chunks(items: Iterable[T], size: int, limit: int | None) -> Iterator[list[T]]:
    """``items`` in lists of ``size``, the first ``limit`` of them (all if None)."""
    chunk: list[T] = []
    for taken, item in enumerate(items):
        if limit is not None and taken >= limit:
            break
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
