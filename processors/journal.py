"""The processor journal: every input and the outputs decided for it, durable before publishing.

Why a journal of our own (DESIGN.md section 6): faust changelog tables on the embedded broker
are not a safe single copy of state, and the ledger may lag the processor (a decision can be
published and not yet sequenced when the processor dies). So each batch is written here in ONE
SQLite transaction (WAL, synchronous=FULL) *before* its outputs are published and *before*
the Kafka offsets are committed:

    consume batch -> decide -> journal (inputs + outputs + arrival times) -> publish -> commit

* crash before the journal commit: nothing happened; Kafka redelivers; decided afresh;
* crash after it: Kafka redelivers; the engine, restored from the journal, answers with the
  stored outputs (same bytes, so the same event ids, so one ledger leaf each);
* broker wiped (embedded broker restart): the journal still holds every decision, so state is
  intact, and :meth:`Journal.outputs_since` lets the service re-publish what the ledger lacks.

Restoring replays *effects* (grants, revocations, uses, nonces, stored outputs), never the
decisions, so a policy change between runs cannot change a decision already made.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils

from ledger.core.streams import Stream
from ledger.errors import Reason, Unavailable
from ledger.log.sqlite import open_sqlite, rollback
from processors.core.outcomes import Outcome, Output

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    arrival TEXT NOT NULL,
    subject TEXT NOT NULL,
    input BLOB NOT NULL,
    outputs TEXT NOT NULL,
    allow INTEGER,
    reasons TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS journal_subject ON journal(subject);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    stream: Stream
    arrival: datetime
    raw: bytes
    outcome: Outcome


def _encode_outputs(outputs: Iterable[Output]) -> str:
    return json.dumps([[o.stream.value, base64.b64encode(o.key).decode(),
                        base64.b64encode(o.value).decode()] for o in outputs])


def _decode_outputs(text: str) -> tuple[Output, ...]:
    return tuple(Output(Stream(s), base64.b64decode(k), base64.b64decode(v))
                 for s, k, v in json.loads(text))


class Journal:
    """One SQLite file per processor (``DATA/processor.db``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Writes go through their own connection, so a worker can commit a batch on a
        # writer thread while the event loop reads (recall, catch-up) on ``self.db``.
        conn = open_sqlite(path, "processor journal", check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise Unavailable(f"processor journal {path}: {exc}") from exc
        self._writer = open_sqlite(path, "processor journal", check_same_thread=False)
        self.path = path

    def append(self, batch: Iterable[tuple[Stream, datetime, bytes, Outcome]],
               offsets: Mapping[tuple[str, int], int] | None = None,
               published: int | None = None, *, first_wins: bool = False) -> int:
        """Write one batch in one transaction. ``offsets`` ((topic, partition) -> next offset
        to consume) and ``published`` (the watermark of outputs the broker acknowledged since
        the last batch) go in the same transaction, so a batch costs one fsync.

        One decision per subject: an outcome whose subject is already journaled with the
        same outputs is skipped; with *different* outputs (two workers of a group decided
        the same input in a rebalance race), nothing of the batch is written and
        Unavailable is raised, so the loser publishes nothing and, restarted, answers from
        the journal. ``first_wins`` skips such a duplicate instead (for the processor's own
        policy publication, where any one of them will do).

        Returns the journal's last sequence number after the batch (pass it to
        :meth:`mark_published` once the batch's outputs are acknowledged by the broker).
        Raises Unavailable on any SQLite error or a conflicting decision.
        """
        rows = [(stream.value, arrival.isoformat(), outcome.subject, raw,
                 _encode_outputs(outcome.outputs),
                 None if outcome.allow is None else int(outcome.allow),
                 json.dumps([r.value for r in outcome.reasons]))
                for stream, arrival, raw, outcome in batch if not outcome.replayed]
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO journal(stream, arrival, subject, input, outputs, allow,"
                " reasons) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            if conn.total_changes - before != len(rows) and not first_wins:
                self._refuse_conflicts(rows)
            if offsets:
                conn.executemany(
                    "INSERT INTO offsets(topic, partition, next_offset) VALUES (?, ?, ?) ON "
                    "CONFLICT(topic, partition) DO UPDATE SET next_offset=excluded.next_offset",
                    [(t, p, o) for (t, p), o in offsets.items()])
            if published is not None:
                self._set_published(published)
            last = conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
            conn.execute("COMMIT")
        except (sqlite3.Error, Unavailable) as exc:
            undone = rollback(conn)
            if isinstance(exc, Unavailable):
                if undone:
                    exc.add_note(f"processor journal:{undone}")
                raise
            raise Unavailable(f"processor journal write failed: {exc}{undone}") from exc
        return int(last)

    def _refuse_conflicts(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Raise Unavailable if a row's subject is journaled with other outputs (inside the
        write transaction: the caller rolls back)."""
        mine: dict[object, object] = {}
        for row in rows:
            if mine.setdefault(row[2], row[4]) != row[4]:
                raise Unavailable(f"two decisions for {str(row[2])[:16]} in one batch")
        for subject, outputs in mine.items():
            stored = self._writer.execute("SELECT outputs FROM journal WHERE subject = ?",
                                          (subject,)).fetchone()
            if stored is not None and stored[0] != outputs:
                raise Unavailable(
                    f"{str(subject)[:16]} was already decided by another worker of the group "
                    "(a rebalance race): nothing of this batch is journaled or published; "
                    "restart this worker to answer it from the journal")

    def mark_published(self, upto_seq: int) -> None:
        """Every output up to ``upto_seq`` was acknowledged by the broker. Raises
        Unavailable on any SQLite error (a full disk)."""
        try:
            self._set_published(upto_seq)
        except sqlite3.Error as exc:
            raise Unavailable(f"processor journal write failed: {exc}"
                              f"{rollback(self._writer)}") from exc

    def _set_published(self, upto_seq: int) -> None:
        self._writer.execute(
            "INSERT INTO meta(key, value) VALUES ('published', ?) ON CONFLICT(key) DO "
            "UPDATE SET value = max(value, excluded.value)", (upto_seq,))

    def meta(self, key: str) -> int | None:
        """An integer the worker keeps beside its entries (watermarks), or None. Raises
        Unavailable."""
        try:
            row = self.db.conn.execute("SELECT value FROM meta WHERE key = ?",
                                       (key,)).fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"processor journal read failed: {exc}") from exc
        return None if row is None else int(row[0])

    def set_meta(self, key: str, value: int) -> None:
        """Set :meth:`meta` ``key`` (its own transaction). Raises Unavailable."""
        try:
            self._writer.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value", (key, value))
        except sqlite3.Error as exc:
            raise Unavailable(f"processor journal write failed: {exc}") from exc

    def present(self, subjects: Sequence[str]) -> set[str]:
        """Those of ``subjects`` that have an entry (one query per 500). Raises
        Unavailable."""
        found: set[str] = set()
        try:
            for start in range(0, len(subjects), 500):
                chunk = json.dumps(list(subjects[start:start + 500]))
                found.update(s for (s,) in self.db.conn.execute(
                    "SELECT subject FROM journal WHERE subject IN "
                    "(SELECT value FROM json_each(?))", (chunk,)))
        except sqlite3.Error as exc:
            raise Unavailable(f"processor journal read failed: {exc}") from exc
        return found

    def offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset to consume, as last journaled."""
        rows = self.db.conn.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(t, p): o for t, p, o in rows}

    def reset_offsets(self, topics: Iterable[str]) -> None:
        """Forget the offsets of ``topics`` (after the broker lost them). Raises Unavailable
        on any SQLite error (a full disk)."""
        names = list(topics)
        try:
            self._writer.executemany("DELETE FROM offsets WHERE topic = ?",
                                     [(n,) for n in names])
        except sqlite3.Error as exc:
            raise Unavailable(f"processor journal write failed: {exc}"
                              f"{rollback(self._writer)}") from exc

    def last_seq(self) -> int:
        """The sequence number of the newest entry (0 for an empty journal)."""
        return int(self.db.conn.execute("SELECT coalesce(max(seq), 0) FROM journal")
                   .fetchone()[0])

    def published_seq(self) -> int:
        row = self.db.conn.execute("SELECT value FROM meta WHERE key='published'").fetchone()
        return 0 if row is None else int(row[0])

    def recall(self, subject: str) -> Outcome | None:
        """The outcome journaled for ``subject`` (request/execution id or input hash)."""
        row = self.db.conn.execute(
            "SELECT subject, outputs, allow, reasons FROM journal WHERE subject = ?",
            (subject,)).fetchone()
        if row is None:
            return None
        return _outcome(row[0], row[1], row[2], row[3])

    def entries(self, since_seq: int = 0) -> Iterator[Entry]:
        """Every journaled input in order, for restoring the engine."""
        for _, entry in self.entries_unless(since_seq, ()):
            assert entry is not None
            yield entry

    def entries_unless(self, since_seq: int,
                       known: Container[str]) -> Iterator[tuple[int, Entry | None]]:
        """``(seq, entry)`` for every entry after ``since_seq`` in order; the entry is None
        (not decoded) where its subject is in ``known``: a group's worker catching up skips
        its own entries at the cost of a lookup."""
        cursor = self.db.conn.execute(
            "SELECT seq, stream, arrival, input, subject, outputs, allow, reasons FROM journal"
            " WHERE seq > ? ORDER BY seq", (since_seq,))
        for seq, stream, arrival, raw, subject, outputs, allow, reasons in cursor:
            if subject in known:
                yield seq, None
                continue
            yield seq, Entry(seq, Stream(stream), datetime.fromisoformat(arrival), raw,
                             _outcome(subject, outputs, allow, reasons))

    def entries_at(self, seqs: Sequence[int]) -> Iterator[Entry]:
        """The entries with these sequence numbers, in journal order (read in chunks)."""
        ordered = sorted(seqs)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            cursor = self.db.conn.execute(
                "SELECT seq, stream, arrival, input, subject, outputs, allow, reasons FROM "
                "journal WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq",
                (json.dumps(chunk),))
            for seq, stream, arrival, raw, subject, outputs, allow, reasons in cursor:
                yield Entry(seq, Stream(stream), datetime.fromisoformat(arrival), raw,
                            _outcome(subject, outputs, allow, reasons))

    def outputs_since(self, since_seq: int = 0) -> Iterator[Output]:
        for entry in self.entries(since_seq):
            yield from entry.outcome.outputs

    def count(self) -> int:
        return int(self.db.conn.execute("SELECT count(*) FROM journal").fetchone()[0])

    def close(self) -> None:
        self._writer.close()
        self.db.conn.close()


def _outcome(subject: str, outputs: str, allow: int | None, reasons: str) -> Outcome:
    return Outcome(subject, _decode_outputs(outputs), None if allow is None else bool(allow),
                   tuple(Reason(r) for r in json.loads(reasons)))
