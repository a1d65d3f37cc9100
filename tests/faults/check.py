"""The checker: after the last trial, hold ``ledger.db`` and ``processor.db`` to what the client
saw. Reads the files directly (``LedgerStore`` read-only, ``Journal``) with ``up`` stopped.

Violations, by invariant:

* ``lost``: a request (or revocation, or execution) the client got a decision for, or that
  decision, is not a leaf of the ledger; or an input the journal decided on is not;
* ``duplicated``: an event id on two leaves; two decisions (grant/denial, allowed/refused)
  about one subject;
* ``changed``: the decision bytes the client saw differ from each other, from the ledger's
  or from the journal's;
* ``wrongful``: a grant or an allowed execution the load marked forbidden (policy, a reused
  nonce, a revoked parent or artifact), in what the client saw, the ledger or the journal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ledger.log.index import DECISION_KINDS
from ledger.log.store import LedgerStore
from processors.journal import Journal
from tests.faults.load import Sent, payload_of

SUBJECT_KINDS = (*DECISION_KINDS, "RevocationApplied")
GRANTING = frozenset({"AuthorizationGranted", "ExecutionAllowed"})


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    event_id: str
    detail: str

    def line(self) -> str:
        return f"{self.invariant}: {self.event_id[:16]} {self.detail}"


def envelope_id(raw: bytes) -> str | None:
    """The event id of envelope bytes, None if they are not an envelope."""
    try:
        return hashlib.sha256(base64.b64decode(json.loads(raw)["payload"])).hexdigest()
    except (ValueError, KeyError, TypeError):
        return None


def journal_ids(path: Path) -> list[tuple[str, list[str]]]:
    """(input id, output ids) of every journaled input that has outputs, read-only (the
    processor may be running). Inputs without an id or outputs (refused unread) are left
    out: nothing signed of theirs is owed to the ledger."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT input, outputs FROM journal ORDER BY seq").fetchall()
    finally:
        conn.close()
    found = []
    for raw, outputs in rows:
        ident = envelope_id(bytes(raw))
        outs = [envelope_id(base64.b64decode(v)) for _, _, v in json.loads(outputs)]
        if ident is not None and outs:
            found.append((ident, [o for o in outs if o is not None]))
    return found


def journaled(path: Path, ids: list[str]) -> int:
    """How many of ``ids`` the journal holds as subjects, read-only (the processor runs)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM journal WHERE subject IN (SELECT value "
                           "FROM json_each(?))", (json.dumps(ids),)).fetchone()
    finally:
        conn.close()
    return int(row[0])


def missing_from_ledger(store: LedgerStore, journaled: Iterable[tuple[str, list[str]]]
                        ) -> list[str]:
    """Journaled input and output ids the ledger lacks."""
    return [i for ident, outs in journaled for i in (ident, *outs) if store.find(i) is None]


def check(data: Path, sent: list[Sent]) -> list[Violation]:
    """Every violation found in ``data`` for the events in ``sent``."""
    found: list[Violation] = []
    with LedgerStore(data / "ledger.db") as store:
        found += _duplicates(store)
        journal = Journal(data / "processor.db")
        try:
            for item in _by_event(sent).values():
                found += _one(store, journal, item)
        finally:
            journal.close()
        trial = {s.event_id: s.trial for s in sent}
        found += [Violation("lost", i, f"journaled, not in the ledger after the settle "
                                       f"(trial {trial.get(i, '?')})")
                  for i in missing_from_ledger(store, journal_ids(data / "processor.db"))]
    return found


def _by_event(sent: list[Sent]) -> dict[str, list[Sent]]:
    grouped: dict[str, list[Sent]] = {}
    for item in sent:
        grouped.setdefault(item.event_id, []).append(item)
    return grouped


def _duplicates(store: LedgerStore) -> list[Violation]:
    conn = store.conn
    found = [Violation("duplicated", bytes(e).hex(), f"event id on {n} leaves") for e, n in
             conn.execute("SELECT event_id, count(*) FROM leaves GROUP BY event_id "
                          "HAVING count(*) > 1")]
    marks = ", ".join("?" * len(DECISION_KINDS))
    found += [Violation("duplicated", bytes(p).hex(), f"{n} decisions about one subject")
              for p, n in conn.execute(
                  f"SELECT parent_ref, count(*) FROM leaves WHERE kind IN ({marks}) "
                  "GROUP BY parent_ref HAVING count(*) > 1", DECISION_KINDS)]
    return found


def _ledger_decisions(store: LedgerStore, subject: str) -> list[bytes]:
    marks = ", ".join("?" * len(SUBJECT_KINDS))
    rows = store.conn.execute(f"SELECT leaf FROM leaves WHERE parent_ref = ? AND kind IN "
                              f"({marks}) ORDER BY idx", (bytes.fromhex(subject),
                                                           *SUBJECT_KINDS))
    return [bytes(r[0]) for r in rows]


def _one(store: LedgerStore, journal: Journal, items: list[Sent]) -> list[Violation]:
    """The invariants for one event id (sent once, or replayed with the same bytes)."""
    eid = items[0].event_id
    what = f"{items[0].op} (trial {items[0].trial})"
    seen = {d for item in items for d in item.decisions}
    forbidden = next((item.forbidden for item in items if item.forbidden), "")
    found: list[Violation] = []
    ledger = _ledger_decisions(store, eid)
    recalled = journal.recall(eid)
    journaled = set() if recalled is None else {o.value for o in recalled.outputs}
    if forbidden:
        kinds = {str(payload_of(d)["kind"]) for d in seen | set(ledger) | journaled}
        if kinds & GRANTING:
            found.append(Violation("wrongful", eid, f"{what} {forbidden}: {sorted(kinds)}"))
    if not seen:
        return found
    if len(seen) > 1:
        found.append(Violation("changed", eid, f"{what}: the client saw {len(seen)} decisions"))
    if store.find(eid) is None:
        found.append(Violation("lost", eid, f"{what}: decided, not in the ledger"))
    for decision in seen:
        did = envelope_id(decision) or "?"
        if store.find(did) is None:
            found.append(Violation("lost", eid, f"{what}: decision {did[:16]} not "
                                                "in the ledger"))
        if ledger and decision not in ledger:
            found.append(Violation("changed", eid, f"{what}: the ledger's decision differs"))
        if recalled is None:
            found.append(Violation("lost", eid, f"{what}: the journal lacks the decision"))
        elif decision not in journaled:
            found.append(Violation("changed", eid, f"{what}: the journal's decision differs"))
    return found
