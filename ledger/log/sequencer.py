"""The sequencer: the only writer of the ledger. Verify -> append -> checkpoint.

* Only envelopes that verify become leaves: the sequencer calls its ``verify`` callable on
  every input; a refusal (``Rejected``) is counted and reported with its reason, never
  stored. :func:`keyring_verifier` judges by signature and kind, never by this process's
  clock: authority kinds only under the authority key, everything else under a known key.
  Duplicates (same event id) are skipped, never stored twice.
* Causes first: after verification, an event whose causes (ledger/core/causes.py: the
  request a decision answers, the grant a delegation or an execution refers to, ...) are not
  leaves yet waits in a bounded hold-back (ledger/log/holdback.py) and follows them;
  past a bound it is appended anyway and reported in ``SubmitResult.late``.
* One commit = one SQLite transaction holding the leaves, their node hashes, the consumer
  offsets (never past an event still held) and (when due) the signed checkpoint, whose
  root is recomputed from the stored nodes; the worker puts several batches in one commit
  (group commit, ledger/log/worker.py). ``checkpoint_interval=0`` signs after every
  commit; ``N`` seconds signs at most that often (the tail in between is *sequenced* but not
  yet *published*).
* On open, before anything is appended (or, in ``govledger up``, served): every leaf hash,
  stored node hash, derived column and lookup-index row is recomputed from the stored leaf
  bytes and the tree root compared with the last signed checkpoint, which must verify under
  the ledger key and name this origin (ledger.log.audit.check_on_open, the audit's own pass).
  Leaves after it (a crash between a batch and its checkpoint) are also re-verified as
  envelopes, and only then signed. Any mismatch raises ProofError naming the first
  divergent leaf index, and nothing is appended.

The ledger's data directory and the one-call library functions the CLI uses are in
:mod:`ledger.log.ledger_dir`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.core.causes import causes
from ledger.core.checkpoint import (
    Checkpoint,
    NoteVerifier,
    build_vkey,
    parse_vkey,
    sign_checkpoint,
)
from ledger.core.keys import KeyRing, Signer
from ledger.core.merkle import TreeSize
from ledger.core.signers import verify_loggable
from ledger.errors import Reason, Rejected
from ledger.log.audit import check_on_open
from ledger.log.causal import leaf_causes, store_present
from ledger.log.commits import PendingAppend
from ledger.log.holdback import Arrival, Holdback, Released
from ledger.log.records import BatchResult, CheckpointSigner, LeafRecord, Offsets
from ledger.log.store import LedgerStore

Verify = Callable[[bytes], LeafRecord]
"""Verifies envelope bytes and returns the leaf to store; raises Rejected."""

Position = tuple[str, int, int]
"""Where an envelope came from: Kafka topic, partition, offset."""


def keyring_verifier(keyring: KeyRing) -> Verify:
    """A :data:`Verify` over ledger.core.envelope.verify_envelope and
    :func:`check_signer_kind`: the signature must verify under a key of ``keyring`` and the
    key must be one that may sign the event's kind. Raises Rejected.

    Key validity windows are not judged here: the processor judged them when the event
    arrived, and the sequencer consumes later (a key that expires or is revoked in between
    must not erase the evidence of what was decided while it was in force). The ledger logs
    facts; whether a request was acceptable is the decision it carries.
    """
    def verify(data: bytes) -> LeafRecord:
        event = verify_loggable(data, keyring)
        return LeafRecord(event.event_id, event.kind, data, event.event.parent_ref(),
                          causes(event.event))
    return verify


@dataclass(frozen=True, slots=True)
class Refusal:
    position: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """One submitted batch: what was appended, skipped as duplicate, or refused."""

    appended: int
    duplicates: int
    refused: tuple[Refusal, ...]
    tree_size: TreeSize
    checkpoint: str | None
    late: tuple[Released, ...] = ()
    """Events appended without their causes, past a hold-back bound (ledger.log.holdback)."""

    def refused_by_reason(self) -> dict[str, int]:
        """How many envelopes of this batch were refused, by reason code."""
        counts: dict[str, int] = {}
        for refusal in self.refused:
            counts[refusal.reason.value] = counts.get(refusal.reason.value, 0) + 1
        return counts

    def late_by_reason(self) -> dict[str, int]:
        """How many events went in without their causes, by hold-back reason."""
        counts: dict[str, int] = {}
        for released in self.late:
            reason = released.late or ""
            counts[reason] = counts.get(reason, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class Admitted:
    """A batch verified and through the hold-back: what may be appended now, in order."""

    released: tuple[Released, ...]
    refused: tuple[Refusal, ...]


class Sequencer:
    """The single writer over a :class:`LedgerStore` opened with ``writer=True``.

    Raises ProofError on open if the stored tree does not match its last checkpoint, and
    ConfigError if the store belongs to another origin or key.
    """

    def __init__(self, store: LedgerStore, signer: Signer, origin: str, verify: Verify, *,
                 reverify: Verify | None = None, checkpoint_interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 holdback: Holdback | None = None) -> None:
        self.store, self.signer, self.origin = store, signer, origin
        self.verify, self.reverify = verify, reverify or verify
        self.vkey = build_vkey(origin, signer.public_key)
        self.verifier: NoteVerifier = parse_vkey(self.vkey)
        self.checkpoint_interval, self._clock = checkpoint_interval, clock
        store.set_meta("origin", origin)
        store.set_meta("vkey", self.vkey)
        self._last_signed = clock()
        self._verify_on_open()
        self.holdback = holdback or Holdback()
        self._present = store_present(store)

    def _sign(self, size: TreeSize, root: bytes) -> str:
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, self.signer)

    def _verify_on_open(self) -> None:
        """Before anything is appended or served: recompute the whole tree from the stored
        leaf bytes and check it, its stored hashes, the derived columns and the lookup
        index against the last signed checkpoint (ledger.log.audit.check_on_open); then sign
        the verified tail, if any, and leave the marker readers check
        (LedgerStore.verified). Raises ProofError naming the first divergent leaf."""
        self.store.set_verified(None)  # readers in other processes answer 503 meanwhile
        signed = check_on_open(self.store, self.verifier, self.origin, self.reverify)
        if self.store.tree_size() > signed or self.store.latest_checkpoint() is None:
            self.store.sign_checkpoint(self._sign)
        self.store.set_verified(self.store.tree_size())

    def _signer_if_due(self) -> CheckpointSigner | None:
        """The checkpoint signer when a checkpoint is due, else None. The interval restarts
        now: an append that then fails leaves the tail unsigned until the next append
        that is due, or :meth:`publish`."""
        now = self._clock()
        if now - self._last_signed < self.checkpoint_interval:
            return None
        self._last_signed = now
        return self._sign

    def append_records(self, records: Sequence[LeafRecord],
                       offsets: Offsets | None = None) -> BatchResult:
        """Append pre-verified records (one transaction). Raises Unavailable/ProofError."""
        return self.store.append(records, offsets, self._signer_if_due())

    def append_begin(self, records: Sequence[LeafRecord],
                     offsets: Offsets | None = None) -> PendingAppend:
        """:meth:`append_records` with the COMMIT left running on the store's commit
        thread (:meth:`LedgerStore.append_begin`), for a caller that appends pre-verified
        groups back to back; ``result()`` of the handle says when they are sequenced.
        Raises Unavailable/ProofError (for the write, or the COMMIT before it)."""
        return self.store.append_begin(records, offsets, self._signer_if_due())

    def admit(self, envelopes: Sequence[bytes], positions: Sequence[Position] | None = None,
              now: float | None = None) -> Admitted:
        """Verify each envelope and pass it through the causal hold-back
        (ledger.log.holdback): returned are the events that may be appended now, causes
        first; an event whose causes are not leaves yet stays held (``positions``, the
        Kafka (topic, partition, offset) of each envelope, keep the stored offsets below
        it). Refusals are returned, never stored. Raises Unavailable (the store's lookup)."""
        arrivals, refused = [], []
        at = self._clock() if now is None else now
        for position, data in enumerate(envelopes):
            try:
                record = self.verify(data)
                found = (leaf_causes(record.kind, record.leaf) if record.causes is None
                         else record.causes)
            except Rejected as exc:
                refused.append(Refusal(position, exc.reason, exc.detail))
                continue
            where = None if positions is None else positions[position]
            arrivals.append(Arrival(record, found, None if where is None else where[:2],
                                    0 if where is None else where[2], at))
        released = self.holdback.admit(arrivals, self._present)
        return Admitted(tuple(released), tuple(refused))

    def expire(self, now: float | None = None) -> tuple[Released, ...]:
        """Held events past the hold-back's time bound, released without their causes."""
        return tuple(self.holdback.expire(self._clock() if now is None else now))

    def commit(self, released: Sequence[Released], consumed: Offsets | None = None,
               refused: Sequence[Refusal] = ()) -> SubmitResult:
        """Append ``released`` (one transaction, the group commit) with the consumer
        offsets: ``consumed`` (next offset per partition) lowered to the lowest offset the
        hold-back still holds there, so a restart reads every held event again. Raises
        Unavailable or ProofError; on error nothing is written."""
        offsets = None
        if consumed is not None:
            offsets = {}
            for tp, next_offset in consumed.items():
                floor = self.holdback.floor(tp)
                offsets[tp] = next_offset if floor is None else min(floor, next_offset)
        result = self.append_records([r.arrival.record for r in released], offsets)
        return SubmitResult(result.appended, result.duplicates, tuple(refused),
                            result.tree_size, result.checkpoint,
                            tuple(r for r in released if r.late is not None))

    def submit(self, envelopes: Sequence[bytes], offsets: Offsets | None = None) -> SubmitResult:
        """Verify each envelope, append those that verify (one transaction), record
        ``offsets`` with them. Causes first within the batch; without positions nothing
        may stay held past the call, so an event whose cause is neither a leaf nor in the
        batch is appended last, counted in ``late``. Refusals are returned, never stored."""
        admitted = self.admit(envelopes)
        released = [*admitted.released, *self.holdback.expire(float("inf"))]
        return self.commit(released, offsets, admitted.refused)

    def publish(self) -> str:
        """Sign a checkpoint of the current tree now (the latest one if already signed)."""
        latest = self.store.latest_checkpoint()
        if latest is not None and latest[0] == self.store.tree_size():
            return latest[1]
        self._last_signed = self._clock()
        return self.store.sign_checkpoint(self._sign)

    def close(self) -> None:
        self.store.close()
