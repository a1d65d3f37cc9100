"""The sequencer's start-up check on a real SQLite file: a ledger tampered at rest (an
attacker with file access drops the append-only triggers first) is refused with ProofError
naming the first divergent leaf, before anything is appended or served."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.core import merkle
from ledger.core.envelope import sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationRevoked, RevocationApplied
from ledger.core.execution_events import ExecutionAllowed, ExecutionRefused
from ledger.errors import ProofError, Reason
from ledger.keyfiles import load_signer
from ledger.log.index import ROLE_EVENT, ROLE_SUBJECT
from ledger.log.ledger_dir import DB_NAME, open_ledger
from ledger.log.pages import PAGE
from ledger.log.recompute import leaf_columns
from ledger.log.sequencer import Sequencer, keyring_verifier
from ledger.log.store import LedgerStore
from tests.factories import ALICE, AUTHORITY, T0, default_ring
from tests.ledger_support import ORIGIN, envelopes, lineage_chain, make_ledger

pytestmark = pytest.mark.integration
VERIFY = keyring_verifier(default_ring())
Change = Callable[[sqlite3.Connection], None]
# Leaves: 0-3 requests, 4-8 the lineage chain (5 and 7 are grants: decision subjects), 9-11
# requests. Checkpoints at 4, 9 and 12.
GRANT = 5


def build(tmp_path: Path, merge_at: int | None = None) -> Path:
    data_dir = make_ledger(tmp_path)
    if merge_at is None:
        seq = open_ledger(data_dir, VERIFY)
    else:  # a tiny recent tier, so that index rows also live in the merged ``keys`` table
        seq = Sequencer(LedgerStore(data_dir / DB_NAME, writer=True, merge_at=merge_at),
                        load_signer(data_dir / "keys" / "ledger.key"), ORIGIN, VERIFY)
    seq.submit(envelopes(4))
    seq.submit([envelope for envelope, _ in lineage_chain()])
    seq.submit(envelopes(3, 4))
    seq.close()
    return data_dir


def tamper(data_dir: Path, change: Change) -> None:
    conn = sqlite3.connect(data_dir / DB_NAME)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    change(conn)
    conn.commit()
    conn.close()


def sql(*statements: str) -> Change:
    def change(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)
    return change


def edit_leaf_byte(conn: sqlite3.Connection) -> None:
    leaf = bytearray(conn.execute("SELECT leaf FROM leaves WHERE idx = 6").fetchone()[0])
    leaf[-10] ^= 0x01  # inside the signature: the payload and its event id stay the same
    conn.execute("UPDATE leaves SET leaf = ? WHERE idx = 6", (bytes(leaf),))


def edit_hash_byte(conn: sqlite3.Connection) -> None:
    h = merkle.stored_hash_index(merkle.NodeId(0, 3))  # the leaf hash of leaf 3
    page, at = divmod(h, PAGE)
    blob = bytearray(conn.execute("SELECT hashes FROM hash_pages WHERE page = ?",
                                  (page,)).fetchone()[0])
    blob[at * 32] ^= 0x01
    conn.execute("UPDATE hash_pages SET hashes = ? WHERE page = ?", (bytes(blob), page))


def delete_index_row(role: int, idx: int) -> Change:
    return sql(f"DELETE FROM keys WHERE role = {role} AND idx = {idx}",
               f"DELETE FROM recent_keys WHERE role = {role} AND idx = {idx}")


TAMPERINGS = [
    pytest.param(edit_leaf_byte, 6, id="leaf-byte-edited"),
    pytest.param(sql("DELETE FROM leaves WHERE idx = 3"), 3, id="row-deleted"),
    pytest.param(sql("UPDATE leaves SET idx = -1 WHERE idx = 2",
                     "UPDATE leaves SET idx = 2 WHERE idx = 9",
                     "UPDATE leaves SET idx = 9 WHERE idx = -1"), 2, id="rows-swapped"),
    pytest.param(sql("UPDATE leaves SET event_id = zeroblob(32) WHERE idx = 10"), 10,
                 id="event-id-column"),
    pytest.param(sql("UPDATE leaves SET kind = 'AuthorizationDenied' WHERE idx = 7"), 7,
                 id="kind-column"),
    pytest.param(sql(f"UPDATE leaves SET parent_ref = zeroblob(32) WHERE idx = {GRANT}"),
                 GRANT, id="parent-ref-column"),
    pytest.param(sql("UPDATE leaves SET parent_ref = NULL WHERE idx = 8"), 8,
                 id="parent-ref-dropped"),
    pytest.param(edit_hash_byte, 3, id="hash-page-byte"),
    pytest.param(delete_index_row(ROLE_EVENT, 4), 4, id="event-index-row-deleted"),
    pytest.param(delete_index_row(ROLE_SUBJECT, GRANT), GRANT,
                 id="subject-index-row-deleted"),
    # (the writer's index catch-up notices this one first: "... the ledger has 11")
    pytest.param(sql("DELETE FROM leaves WHERE idx = 11"), 11, id="last-leaf-deleted"),
]


@pytest.mark.parametrize(("change", "first_bad"), TAMPERINGS)
def test_open_refuses_a_tampered_ledger_naming_the_first_bad_leaf(
        tmp_path: Path, change: Change, first_bad: int) -> None:
    data_dir = build(tmp_path)
    tamper(data_dir, change)
    named = rf"(at leaf {first_bad}:|the ledger has {first_bad}$)"
    with pytest.raises(ProofError, match=named):
        open_ledger(data_dir, VERIFY)
    with pytest.raises(ProofError, match=named):  # the failed open released the lock
        open_ledger(data_dir, VERIFY)


@pytest.mark.parametrize("role", [ROLE_EVENT, ROLE_SUBJECT])
def test_open_refuses_a_row_deleted_from_the_merged_index_tier(tmp_path: Path,
                                                               role: int) -> None:
    data_dir = build(tmp_path, merge_at=4)
    conn = sqlite3.connect(data_dir / DB_NAME)
    merged = conn.execute("SELECT idx FROM keys WHERE role = ? ORDER BY idx",
                          (role,)).fetchall()
    conn.close()
    assert merged, "the test needs rows in the merged tier"
    tamper(data_dir, delete_index_row(role, merged[0][0]))
    with pytest.raises(ProofError, match=rf"at leaf {merged[0][0]}:"):
        open_ledger(data_dir, VERIFY)


def test_open_refuses_a_stray_index_row(tmp_path: Path) -> None:
    data_dir = build(tmp_path)
    # A row claiming leaf 2 holds another event id (say, one the attacker wants "found").
    tamper(data_dir, sql("INSERT INTO recent_keys VALUES (0, 2, 0, 12345)"))
    with pytest.raises(ProofError, match=r"at leaf 2:"):
        open_ledger(data_dir, VERIFY)


def test_an_untouched_ledger_opens_and_appends(tmp_path: Path) -> None:
    data_dir = build(tmp_path, merge_at=4)
    seq = open_ledger(data_dir, VERIFY)
    assert seq.submit(envelopes(2, 100)).tree_size == 14
    seq.close()
    open_ledger(data_dir, VERIFY).close()


def authority_events() -> list[bytes]:
    """One of each authority kind whose parent is not on the lineage chain."""
    rid, xid = "1" * 64, "2" * 64
    common: dict[str, Any] = {"signer": "govledger:authority", "tenant": "acme",
                              "issued_at": T0}
    under: dict[str, Any] = {**common, "artifact_id": "3" * 64, "root": rid, "execution_id": xid}
    events = [
        AuthorizationDenied(**common, nonce="open-test-deny-001", request_id=rid,
                            reasons=(Reason.POLICY_DENY,)),
        RevocationApplied(**common, nonce="open-test-applied1", revocation_id=xid,
                          artifact_id="3" * 64, root=rid, revoked=("3" * 64,)),
        ExecutionAllowed(**under, nonce="open-test-allowed1"),
        ExecutionRefused(**under, nonce="open-test-refused1", reasons=(Reason.SCOPE_MISMATCH,)),
    ]
    return [sign_event(event, AUTHORITY) for event in events]


def test_leaf_columns_agree_with_the_verified_event_for_every_kind_stored() -> None:
    """The fast reading of (event id, kind, parent) used at start equals the sequencer's."""
    revoke = sign_event(AuthorizationRevoked(
        signer="agent:alice", tenant="acme", nonce="open-test-revoke1", issued_at=T0,
        artifact_id="3" * 64, root="1" * 64), ALICE)
    for envelope in [*envelopes(2), *(e for e, _ in lineage_chain()), *authority_events(),
                     revoke]:
        record = VERIFY(envelope)
        assert leaf_columns(envelope) == (
            bytes.fromhex(record.event_id), record.kind,
            None if record.parent_ref is None else bytes.fromhex(record.parent_ref))
    assert leaf_columns(b"not an envelope") is None
