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
* **Consistent** (ledger -> journal): a journal that lacks decisions the ledger holds is
  rebuilt from the ledger before the engine restores (processors/rebuild.py).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ledger.core.envelope import event_id
from ledger.core.keys import KeyRing
from ledger.core.signers import verify_loggable
from ledger.core.streams import INPUT_STREAMS, Stream
from ledger.errors import Rejected, Unavailable
from ledger.log.store import LedgerStore
from processors.core.freshness import Limits
from processors.core.outcomes import Output
from processors.journal import Entry, Journal
from processors.rebuild import Rebuild, chunks

log = logging.getLogger("govledger.processor")

LEDGERED = "ledgered"
"""Journal meta: every entry up to this sequence number has all its events in the ledger."""
LEDGERED_AT = "ledgered_at"
"""Journal meta: the ledger's size when the watermark last moved (a smaller ledger was
replaced or restored from an older copy: the watermark no longer holds)."""

CHUNK = 2_000  # journal entries per ledger query



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
                 authority_identity: str, limits: Limits,
                 authority: KeyRing | None = None) -> None:
        """``keyring`` is the live one (the engine's: what the ledger logs); ``authority``
        holds the authority key the rebuild verifies decisions under (default: keyring)."""
        self.journal_path = journal_path
        self.ledger_path = ledger_path
        self.keyring = keyring
        self.authority = authority if authority is not None else keyring
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
        for chunk in chunks(self.journal.entries(start), CHUNK, limit):
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
        """Journal every authority decision of the ledger that the journal lacks
        (processors/rebuild.py). Call before the engine restores. Returns how many entries
        were added (the ledger's governance history, journaled first when the journal has
        none (processors/genesis.py), is not counted).
        Raises Unavailable."""
        from processors.genesis import GENESIS_META, import_genesis
        if self.journal.meta(GENESIS_META) is None:
            log.info("journaled %d governance events of the ledger",
                     import_genesis(self.journal, self.ledger))
        return Rebuild(self.journal, self.ledger, keyring=self.authority,
                                  authority_identity=self.authority_identity,
                                  limits=self.limits).run(now, trusted=self._trusted)


