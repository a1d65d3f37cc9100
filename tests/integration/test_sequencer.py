"""The sequencer over a real SQLite file: verify -> append -> checkpoint, and refusal to
append on top of a ledger that does not match its last signed checkpoint."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ledger.core.checkpoint import parse_vkey, verify_checkpoint
from ledger.core.envelope import sign_event
from ledger.errors import ConfigError, ProofError, Reason, Unavailable
from ledger.log.ledger_dir import (
    DB_NAME,
    append_jsonl,
    init_ledger,
    ledger_info,
    open_ledger,
    read_vkey,
)
from ledger.log.sequencer import Sequencer, keyring_verifier
from tests.factories import MALLORY, default_ring, request, signed_request
from tests.ledger_support import ORIGIN, envelopes, make_ledger, write_keyring

pytestmark = pytest.mark.integration
VERIFY = keyring_verifier(default_ring())


def open_seq(data_dir: Path, **kwargs: object) -> Sequencer:
    return open_ledger(data_dir, VERIFY, **kwargs)  # type: ignore[arg-type]


def test_init_publishes_a_verifiable_empty_checkpoint(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    info = ledger_info(data_dir)
    assert (info.origin, info.tree_size) == (ORIGIN, 0)
    assert info.root_hash == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert info.vkey == read_vkey(data_dir) and info.vkey.startswith(ORIGIN + "+")
    assert (data_dir / "keys" / "ledger.key").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError):
        init_ledger(data_dir, ORIGIN)


def test_only_verified_envelopes_become_leaves(tmp_path: Path) -> None:
    seq = open_seq(make_ledger(tmp_path))
    good = envelopes(3)
    forged = signed_request(nonce="nonce-forged-00001").replace(b'"sig":"', b'"sig":"AAAA', 1)
    unknown_key = signed_request(nonce="nonce-mallory-0001")
    by_mallory = sign_event(request(nonce="nonce-mallory-0002"), MALLORY)
    result = seq.submit([good[0], b"not json", forged, good[1], by_mallory, good[2], good[0],
                         unknown_key])
    assert (result.appended, result.duplicates, result.tree_size) == (4, 1, 4)
    assert [r.position for r in result.refused] == [1, 2, 4]
    assert result.refused[0].reason == Reason.MALFORMED
    assert result.refused[2].reason == Reason.KEY_UNKNOWN
    checkpoint = verify_checkpoint(str(result.checkpoint), parse_vkey(seq.vkey), ORIGIN)
    assert checkpoint.size == 4 and checkpoint.root_hash == seq.store.root_at(4)
    seq.close()


def test_interval_checkpoints_and_the_tail_is_signed_on_reopen(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    now = [0.0]
    seq = open_seq(data_dir, checkpoint_interval=10.0)
    seq._clock = lambda: now[0]  # a controllable clock for this test
    seq._last_signed = 0.0
    assert seq.submit(envelopes(3)).checkpoint is None
    now[0] = 10.0
    assert seq.submit(envelopes(2, 3)).checkpoint is not None
    assert seq.submit(envelopes(2, 5)).checkpoint is None
    assert seq.store.latest_checkpoint()[0] == 5  # type: ignore[index]
    seq.close()
    reopened = open_seq(data_dir)
    assert reopened.store.latest_checkpoint()[0] == 7  # type: ignore[index]
    reopened.close()


def tamper(data_dir: Path, *sql: str) -> None:
    conn = sqlite3.connect(data_dir / DB_NAME)
    for table in ("leaves", "checkpoints"):
        for op in ("update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_{op}")
    conn.execute("DROP TRIGGER IF EXISTS hash_pages_grow_only")
    conn.execute("DROP TRIGGER IF EXISTS hash_pages_append_only_delete")
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("sql", [
    "DELETE FROM leaves WHERE idx >= 5",
    # node (2, 0), hash number 6: part of the root at size 6
    "UPDATE hash_pages SET hashes = CAST(substr(hashes, 1, 192) || zeroblob(32) || "
    "substr(hashes, 225) AS BLOB) WHERE page = 0",
    "UPDATE checkpoints SET note = replace(note, '\n6\n', '\n5\n') WHERE size = 6",
], ids=["truncated-below-checkpoint", "stored-hash-edited", "checkpoint-edited"])
def test_open_refuses_a_ledger_that_does_not_match_its_checkpoint(tmp_path: Path,
                                                                 sql: str) -> None:
    data_dir = make_ledger(tmp_path)
    seq = open_seq(data_dir)
    seq.submit(envelopes(6))
    seq.close()
    tamper(data_dir, sql)
    with pytest.raises(ProofError):
        open_seq(data_dir)
    with pytest.raises(ProofError):  # the failed open released the writer lock
        open_seq(data_dir)


def test_open_refuses_a_forged_unsigned_tail(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    seq = open_seq(data_dir)
    seq.submit(envelopes(4))
    seq.close()
    # An attacker appends a leaf that is not a valid envelope, after the last checkpoint.
    tamper(data_dir, "INSERT INTO leaves VALUES (4, zeroblob(32), 'X', NULL, x'00')")
    with pytest.raises(ProofError, match="leaf 4"):
        open_seq(data_dir)


def test_a_second_sequencer_is_refused(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    seq = open_seq(data_dir)
    with pytest.raises(Unavailable):
        open_seq(data_dir)
    seq.close()


def test_append_jsonl_counts_and_reports_progress(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    keyring = write_keyring(tmp_path / "keyring.json")
    lines = [*envelopes(5), b"{}", envelopes(1)[0]]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    seen: list[int] = []
    counts = append_jsonl(data_dir, jsonl, keyring, batch_size=3, progress=seen.append)
    assert (counts.appended, counts.duplicates, counts.refused) == (5, 1, 1)
    assert counts.reasons == {"MALFORMED": 1}
    assert seen == [3, 6, 7]
    assert ledger_info(data_dir).tree_size == 5
    again = append_jsonl(data_dir, jsonl, keyring)
    assert (again.appended, again.duplicates) == (0, 6)
