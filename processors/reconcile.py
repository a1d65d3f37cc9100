"""The processor journal against the ledger: the ledger is the system of record (DESIGN.md 7).

Two directions, and the broker is asked about neither (a memory-only broker forgets
everything on restart; Kafka forgets after its retention):

* **Complete** (journal -> ledger): every input the worker decided on and every output it
  published must become a leaf. :meth:`Reconciler.unledgered` reads journal entries past the
  ``ledgered`` watermark and asks the ledger which of their events it lacks; the worker
  publishes those again: an input to its own input topic (where the worker answers it from
  the journal, like any redelivery, and the sequencer logs it), an output to its topic. The
  sequencer keeps one leaf per event id, so publishing twice is harmless. The watermark
  moves past an entry once the ledger holds all of its events, so a start checks only the
  tail. Dead letters are not logged (their bytes are unauthenticated; the signed denial
  naming their hash is).
* **Consistent** (ledger -> journal): a journal that lacks decisions the ledger holds (the
  file was deleted, lost with a disk, or restored from an old backup) would decide on a
  state that forgot grants, revocations, uses and nonces: a replayed nonce could be granted
  and a resent request denied REPLAY, two decisions for one id. :meth:`Reconciler.rebuild`
  finds every authority-signed decision in the ledger whose subject the journal lacks and
  journals it again from the ledger's bytes, with its request (also a leaf) as the input,
  before the engine restores. The engine then restores those entries like any other: it
  re-verifies every grant, revocation and use under the authority key.

  A decision whose request is not in the ledger can be rebuilt without the request only if
  the request's nonce no longer matters: it was refused before verification (its denial names
  no lineage root; it spent no nonce), or it was decided longer ago than the replay memory
  keeps nonces. Otherwise the worker refuses to start (``Unavailable``) and says until when:
  it never decides on a state that forgot something.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from ledger.core.envelope import event_id, read_stored, verify_stored
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    Event,
    ExecutionAllowed,
    ExecutionRefused,
    RevocationApplied,
)
from ledger.core.keys import KeyRing
from ledger.core.signers import verify_loggable
from ledger.core.streams import DECIDED_STREAM_OF, INPUT_STREAMS, Stream
from ledger.errors import Reason, Rejected, Unavailable
from ledger.log.store import LedgerStore, StoredLeaf
from processors.core.checks import Limits
from processors.core.outcomes import Outcome, Output
from processors.journal import Entry, Journal

log = logging.getLogger("govledger.processor")

LEDGERED = "ledgered"
"""Journal meta: every entry up to this sequence number has all its events in the ledger."""
LEDGERED_AT = "ledgered_at"
"""Journal meta: the ledger's size when the watermark last moved (a smaller ledger was
replaced or restored from an older copy: the watermark no longer holds)."""
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
CHUNK = 2_000  # journal entries or ledger leaves per ledger query
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unledgered:
    """What a scan of the journal found: the events to publish again (inputs before the
    outputs they produced, in journal order), and the watermark it may move to."""

    missing: tuple[Output, ...]
    ledgered_upto: int
    scanned: int
    last_seq: int


def entry_events(entry: Entry) -> Iterator[tuple[str, Output]]:
    """(event id, what to publish) for every event of a journal entry that belongs in the
    ledger: its input if it was verified (the subject is then its event id), and every
    output but dead letters."""
    outcome = entry.outcome
    key = outcome.outputs[0].key if outcome.outputs else outcome.subject.encode()
    if (entry.stream in INPUT_STREAMS and entry.raw
            and hashlib.sha256(entry.raw).hexdigest() != outcome.subject):
        yield outcome.subject, Output(entry.stream, key, entry.raw)
    for output in outcome.outputs:
        if output.stream is Stream.DEADLETTER:
            continue
        try:  # the event id alone: no need to decode the payload (read_stored would)
            payload = base64.b64decode(json.loads(output.value)["payload"], validate=True)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise Unavailable(f"journal entry {outcome.subject[:16]} holds an output that "
                              "does not decode") from exc
        yield event_id(payload), output


class Reconciler:
    """The journal of one processor against one ledger (opened read-only).

    Opens its own connections to both files on first use: call every method from one
    thread (the worker runs them on a thread of their own, so a long scan never holds up the
    event loop). Raises ConfigError if the ledger does not exist.
    """

    def __init__(self, journal_path: Path, ledger_path: Path, *, keyring: KeyRing,
                 authority_identity: str, limits: Limits) -> None:
        self.journal_path = journal_path
        self.ledger_path = ledger_path
        self.keyring = keyring
        self.authority_identity = authority_identity
        self.limits = limits
        self._journal: Journal | None = None
        self._ledger: LedgerStore | None = None
        self._lock: int | None = None

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.journal_path)
        return self._journal

    @property
    def ledger(self) -> LedgerStore:
        if self._ledger is None:
            self._ledger = LedgerStore(self.ledger_path)
        return self._ledger

    def lead(self) -> bool:
        """True if this process reconciles the journal's entries with the ledger: the
        workers of a group share one journal, and one of them at a time is enough (an
        exclusive ``flock`` held until :meth:`close`). Raises Unavailable."""
        if self._lock is None:
            try:
                fd = os.open(f"{self.journal_path}.reconcile.lock", os.O_RDWR | os.O_CREAT,
                             0o600)
            except OSError as exc:
                raise Unavailable(f"cannot open {self.journal_path}.reconcile.lock: "
                                  f"{exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker of the group reconciles
                os.close(fd)
                return False
            except OSError as exc:
                os.close(fd)
                raise Unavailable(f"cannot lock {self.journal_path}.reconcile.lock: "
                                  f"{exc.strerror}") from exc
            self._lock = fd
        return True

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if self._ledger is not None:
            self._ledger.close()
        if self._journal is not None:
            self._journal.close()
        self._journal = self._ledger = None

    # -- journal -> ledger -------------------------------------------------------------------

    def unledgered(self, limit: int | None = None, after: int | None = None) -> Unledgered:
        """Scan up to ``limit`` entries (all if None) after entry ``after`` (default: the
        watermark). ``ledgered_upto`` may move the watermark only for a scan that started
        at it. Raises Unavailable."""
        if not self._trusted():  # being checked by the sequencer now: next round
            watermark = self.journal.meta(LEDGERED) or 0
            return Unledgered((), watermark, 0, watermark if after is None else after)
        watermark = self._watermark()
        start = watermark if after is None else after
        missing: list[Output] = []
        upto, scanned, clean, last = start, 0, start == watermark, start
        for chunk in _chunks(self.journal.entries(start), CHUNK, limit):
            events = [(entry.seq, list(entry_events(entry))) for entry in chunk]
            present = self.ledger.contains([eid for _, found in events for eid, _ in found])
            for seq, found in events:
                lacking = [output for eid, output in found
                           if eid not in present and self._loggable(output)]
                missing.extend(lacking)
                clean = clean and not lacking
                if clean:
                    upto = seq
                last = seq
            scanned += len(chunk)
        return Unledgered(tuple(missing), upto if start == watermark else watermark,
                          scanned, last)

    def _loggable(self, output: Output) -> bool:
        """Whether the ledger can ever hold ``output`` (checked only for what it lacks):
        the sequencer's admission rule. A journal written before the processor applied that
        rule to its inputs may hold an input the ledger refuses (an agent-signed decision
        kind on an input topic): its signed denial is its record, and the watermark must
        not stop at it."""
        if output.stream not in INPUT_STREAMS:
            return True
        try:
            verify_loggable(output.value, self.keyring)
        except Rejected:
            return False
        return True

    def _trusted(self) -> bool:
        """The ledger was verified against its checkpoint by a sequencer that still holds it
        (the marker alone outlives the sequencer: a file edited after it stopped would still
        carry it)."""
        return self.ledger.verified() is not None and self.ledger.writer_running()

    def _watermark(self) -> int:
        """The ``ledgered`` watermark, reset to 0 if the ledger is smaller than when it was
        last moved (every entry is then checked against the ledger again)."""
        watermark = self.journal.meta(LEDGERED) or 0
        if watermark and self.ledger.tree_size() < (self.journal.meta(LEDGERED_AT) or 0):
            log.warning("the ledger is smaller than when the journal's entries were last "
                        "found in it (replaced or restored from an older copy?): checking "
                        "every entry against it again")
            self.journal.set_meta(LEDGERED, 0)
            watermark = 0
        return watermark

    def mark_ledgered(self, upto: int) -> None:
        if upto > (self.journal.meta(LEDGERED) or 0):
            self.journal.set_meta(LEDGERED_AT, self.ledger.tree_size())
            self.journal.set_meta(LEDGERED, upto)

    # -- ledger -> journal -------------------------------------------------------------------

    def rebuild(self, now: datetime) -> int:
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
        trusted = self._trusted()
        if lacking and not trusted:  # what is imported must come from a verified ledger
            raise Unavailable(
                f"the journal lacks {len(lacking)} decisions {self.ledger_path} holds, and "
                "that ledger is not verified against its signed checkpoint by a running "
                "sequencer (its start-up check has not passed, or no sequencer holds the "
                "ledger, so it may have changed since): the processor rebuilds only from a "
                "verified ledger; start the sequencer first")
        if lacking:
            log.warning("the ledger holds %d decisions this journal lacks (journal deleted, "
                        "lost or restored from an older copy): rebuilding them from the ledger",
                        len(lacking))
            self.journal.append(self._entries(lacking, now))
        if trusted:
            self.journal.set_meta(LEDGER_CHECKED, size)
        return len(lacking)

    def _lacking(self, start: int, size: int) -> dict[str, list[StoredLeaf]]:
        """Authority decisions among leaves [start, size) whose subject is not journaled,
        grouped by subject in ledger order. Raises Unavailable where the journal holds
        another decision for a subject than the ledger does."""
        lacking: dict[str, list[StoredLeaf]] = {}
        leaves = self.ledger.iter_kinds(DECISION_KINDS, start, size)
        for chunk in _chunks(leaves, CHUNK, None):
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


def _chunks(items: Iterable[T], size: int, limit: int | None) -> Iterator[list[T]]:
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
