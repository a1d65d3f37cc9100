"""Audit catches each tamper class at the right index, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.core import merkle
from ledger.core.envelope import sign_event
from ledger.core.merkle import CompactRange
from ledger.log.audit import audit_ledger
from ledger.log.ledger_dir import DB_NAME, open_ledger
from ledger.log.pages import PAGE
from ledger.log.sequencer import keyring_verifier
from tests.factories import MALLORY, default_ring, request
from tests.ledger_support import envelopes, make_ledger, write_keyring

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(tmp_path: Path) -> tuple[Path, Path]:
    data_dir = make_ledger(tmp_path)
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    for start in range(0, 40, 10):
        seq.submit(envelopes(10, start))  # checkpoints at 10, 20, 30, 40
    seq.close()
    return data_dir, write_keyring(tmp_path / "keyring.json")


def tamper(data_dir: Path, change: Callable[[sqlite3.Connection], None]) -> None:
    """An attacker with write access: drop the append-only triggers, then edit."""
    conn = sqlite3.connect(data_dir / DB_NAME)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    for name in names:
        conn.execute(f"DROP TRIGGER {name}")
    change(conn)
    conn.commit()
    conn.close()


def edit_byte(index: int) -> Callable[[sqlite3.Connection], None]:
    def change(conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT leaf FROM leaves WHERE idx=?", (index,)).fetchone()
        leaf = bytearray(row[0])
        leaf[40] ^= 0x01
        conn.execute("UPDATE leaves SET leaf=? WHERE idx=?", (bytes(leaf), index))
    return change


def recompute_hashes(conn: sqlite3.Connection) -> None:
    compact, hashes = CompactRange(), []
    for (leaf,) in conn.execute("SELECT leaf FROM leaves ORDER BY idx"):
        hashes.extend(compact.append(merkle.leaf_hash(leaf)))
    blob = b"".join(hashes)
    conn.execute("DELETE FROM hash_pages")
    conn.executemany("INSERT INTO hash_pages VALUES (?, ?)",
                     [(n, blob[s:s + PAGE * 32]) for n, s in enumerate(range(0, len(blob),
                                                                               PAGE * 32))])


def swap(i: int, j: int) -> Callable[[sqlite3.Connection], None]:
    def change(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE leaves SET idx=-1 WHERE idx=?", (i,))
        conn.execute("UPDATE leaves SET idx=? WHERE idx=?", (i, j))
        conn.execute("UPDATE leaves SET idx=? WHERE idx=-1", (j,))
    return change


def forge(conn: sqlite3.Connection) -> None:
    forged = sign_event(request(nonce="nonce-forged-000001"), MALLORY)
    conn.execute("INSERT INTO leaves VALUES (40, ?, 'AuthorizationRequested', NULL, ?)",
                 (bytes(32), forged))


def test_an_untouched_ledger_passes_audit(ledger: tuple[Path, Path]) -> None:
    data_dir, keyring = ledger
    report = audit_ledger(data_dir, keyring)
    assert report.ok, report.problems
    assert (report.tree_size, report.checkpoints_checked, report.envelopes_checked) == (40, 5, 40)


@pytest.mark.parametrize(("change", "first_bad"), [
    (edit_byte(13), 13),
    (lambda c: c.execute("DELETE FROM leaves WHERE idx = 17"), 17),
    (swap(22, 25), 22),
    (lambda c: c.execute("DELETE FROM leaves WHERE idx >= 35"), 35),
    (forge, 40),
    (lambda c: (edit_byte(13)(c), recompute_hashes(c)), 13),
], ids=["leaf-byte-edited", "row-deleted", "rows-swapped", "tail-truncated", "row-forged",
        "hashes-recomputed-after-edit"])
def test_audit_finds_the_first_bad_index(ledger: tuple[Path, Path],
                                         change: Callable[[sqlite3.Connection], None],
                                         first_bad: int) -> None:
    data_dir, keyring = ledger
    tamper(data_dir, change)
    report = audit_ledger(data_dir, keyring)
    assert not report.ok
    assert report.first_bad_index == first_bad, report.problems


def edit_signature(index: int) -> Callable[[sqlite3.Connection], None]:
    """Change one character of the signature: the event id (the payload's hash) stays."""
    def change(conn: sqlite3.Connection) -> None:
        leaf = conn.execute("SELECT leaf FROM leaves WHERE idx=?", (index,)).fetchone()[0]
        at = leaf.index(b'"sig":"') + 7
        edited = leaf[:at] + (b"B" if leaf[at:at + 1] == b"A" else b"A") + leaf[at + 1:]
        conn.execute("UPDATE leaves SET leaf=? WHERE idx=?", (edited, index))
    return change


def test_an_edited_payload_is_named_by_its_event_id_even_without_a_keyring(
        ledger: tuple[Path, Path]) -> None:
    data_dir, _ = ledger
    tamper(data_dir, lambda c: (edit_byte(13)(c), recompute_hashes(c)))
    report = audit_ledger(data_dir)
    assert (report.ok, report.first_bad_index) == (False, 13)
    assert "event id" in str(report.what)


def test_recomputed_hashes_without_a_keyring_are_caught_by_the_checkpoint(
        ledger: tuple[Path, Path]) -> None:
    data_dir, _ = ledger
    tamper(data_dir, lambda c: (edit_signature(13)(c), recompute_hashes(c)))
    report = audit_ledger(data_dir)
    assert not report.ok
    # The leaves in [10, 20) no longer give the root signed at 20.
    assert (report.first_bad_index, report.bad_checkpoint) == (10, 20)


def test_an_edited_checkpoint_is_caught(ledger: tuple[Path, Path]) -> None:
    data_dir, keyring = ledger

    def change(conn: sqlite3.Connection) -> None:
        note = conn.execute("SELECT note FROM checkpoints WHERE size = 30").fetchone()[0]
        lines = note.split("\n")
        lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
        conn.execute("UPDATE checkpoints SET note = ? WHERE size = 30", ("\n".join(lines),))

    tamper(data_dir, change)
    report = audit_ledger(data_dir, keyring)
    assert not report.ok
    assert report.bad_checkpoint == 30
    assert report.first_bad_index is None
    assert "invalid signature" in str(report.what)


def test_a_duplicated_event_is_caught_even_with_consistent_hashes(
        ledger: tuple[Path, Path]) -> None:
    """Uniqueness of event ids is enforced by the single writer, not by a constraint: the
    audit checks it. Append a copy of leaf 3 at index 40 with every hash recomputed."""
    data_dir, _ = ledger

    def duplicate(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO leaves SELECT 40, event_id, kind, parent_ref, leaf "
                     "FROM leaves WHERE idx = 3")
        recompute_hashes(conn)
    tamper(data_dir, duplicate)
    report = audit_ledger(data_dir, None)
    assert not report.ok
    assert any(p.index == 40 and "twice" in p.what for p in report.problems)
