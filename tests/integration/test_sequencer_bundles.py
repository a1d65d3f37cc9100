"""Proof bundles exported from a real ledger and verified offline with the vkey and the keys
each leaf must be signed with."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from ledger.core.bundles import verify_bundle
from ledger.core.checkpoint import build_vkey
from ledger.core.signers import SignerKeys
from ledger.errors import ProofError
from ledger.log.ledger_dir import open_ledger, read_vkey
from ledger.log.proofs import (
    bundle_json,
    prove_consistency,
    prove_inclusion,
    prove_lineage,
    verify_bundle_file,
)
from ledger.log.sequencer import keyring_verifier
from tests.factories import MALLORY, default_ring
from tests.ledger_support import ORIGIN, envelopes, lineage_chain, make_ledger

pytestmark = pytest.mark.integration
KEYS = SignerKeys(keyring=default_ring())


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    data_dir = make_ledger(tmp_path_factory.mktemp("bundles"))
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    seq.submit(envelopes(7))                     # checkpoint at 7
    chain = lineage_chain()
    seq.submit([env for env, _ in chain])        # checkpoint at 12
    seq.submit(envelopes(9, 7))                  # checkpoint at 21
    seq.close()
    return data_dir, [event_id for _, event_id in chain]


def test_inclusion_bundle_by_index_and_event_id_verifies(ledger: tuple[Path, list[str]],
                                                         tmp_path: Path) -> None:
    data_dir, chain = ledger
    bundle = prove_inclusion(data_dir, index=3)
    assert set(bundle) == {"origin", "index", "tree_size", "leaf", "leaf_hash", "proof",
                           "root_hash", "checkpoint"}
    assert (bundle["origin"], bundle["index"], bundle["tree_size"]) == (ORIGIN, 3, 21)
    path = tmp_path / "bundle.json"
    path.write_text(bundle_json(bundle))
    assert verify_bundle_file(path, data_dir).kind == "inclusion"
    by_id = prove_inclusion(data_dir, event_id=chain[2])
    assert by_id["index"] == 9
    assert verify_bundle(by_id, read_vkey(data_dir)).tree_size == 21


def tampered_inclusion(bundle: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    out = []
    for key, value in [("index", 4), ("tree_size", 20), ("root_hash", "00" * 32),
                       ("leaf", base64.b64encode(b"other").decode()), ("leaf_hash", "11" * 32),
                       ("origin", "other/log"), ("extra", 1), ("index", True)]:
        changed = copy.deepcopy(bundle)
        changed[key] = value
        out.append((key, changed))
    proof = list(bundle["proof"])  # type: ignore[call-overload]
    for name, new_proof in [("truncated", proof[:-1]), ("appended", [*proof, proof[0]]),
                            ("bitflip", [("0" if proof[0][0] != "0" else "1") + proof[0][1:],
                                         *proof[1:]])]:
        changed = copy.deepcopy(bundle)
        changed["proof"] = new_proof
        out.append((name, changed))
    changed = copy.deepcopy(bundle)
    changed["checkpoint"] = str(bundle["checkpoint"]).replace("\n21\n", "\n20\n")
    out.append(("checkpoint", changed))
    return out


def test_every_tampered_inclusion_bundle_is_rejected(ledger: tuple[Path, list[str]]) -> None:
    data_dir, _ = ledger
    vkey = read_vkey(data_dir)
    bundle = prove_inclusion(data_dir, index=5)
    for name, changed in tampered_inclusion(bundle):
        with pytest.raises(ProofError):
            verify_bundle(json.dumps(changed).encode(), vkey)
        assert name


def test_a_bundle_does_not_verify_under_another_key(ledger: tuple[Path, list[str]]) -> None:
    data_dir, _ = ledger
    with pytest.raises(ProofError, match="no signature"):
        verify_bundle(prove_inclusion(data_dir, index=0), build_vkey(ORIGIN, MALLORY.public_key))


def test_consistency_bundle_between_signed_checkpoints(ledger: tuple[Path, list[str]]) -> None:
    data_dir, _ = ledger
    vkey = read_vkey(data_dir)
    bundle = prove_consistency(data_dir, 7)
    assert (bundle["old_size"], bundle["new_size"]) == (7, 21)
    assert verify_bundle(bundle, vkey).kind == "consistency"
    assert verify_bundle(prove_consistency(data_dir, 7, 12), vkey).tree_size == 12
    swapped = dict(bundle, old_root=bundle["new_root"], new_root=bundle["old_root"])
    with pytest.raises(ProofError):
        verify_bundle(swapped, vkey)
    with pytest.raises(ProofError, match="no signed checkpoint"):
        prove_consistency(data_dir, 8)
    with pytest.raises(ProofError):
        prove_consistency(data_dir, 21, 12)


def test_lineage_bundle_walks_back_to_the_root(ledger: tuple[Path, list[str]]) -> None:
    data_dir, chain = ledger
    vkey = read_vkey(data_dir)
    bundle = prove_lineage(data_dir, chain[-1])
    result = verify_bundle(bundle, vkey, KEYS)
    assert result.kind == "lineage"
    assert result.event_ids == tuple(reversed(chain))
    assert result.signers_checked
    root_only = verify_bundle(prove_lineage(data_dir, chain[0]), vkey, KEYS)
    assert root_only.event_ids == (chain[0],)


def test_a_lineage_bundle_with_a_missing_or_reordered_hop_is_rejected(
        ledger: tuple[Path, list[str]]) -> None:
    data_dir, chain = ledger
    vkey = read_vkey(data_dir)
    bundle = prove_lineage(data_dir, chain[-1])
    hops = list(bundle["hops"])  # type: ignore[call-overload]
    for name, new_hops in [("missing-middle", [*hops[:2], *hops[3:]]),
                           ("missing-root", hops[:-1]),
                           ("reordered", [hops[1], hops[0], *hops[2:]]),
                           ("empty", [])]:
        with pytest.raises(ProofError):
            verify_bundle(dict(bundle, hops=new_hops), vkey, KEYS)
        assert name
    with pytest.raises(ProofError):
        verify_bundle(dict(bundle, event_id=chain[0]), vkey, KEYS)


def test_proving_an_unknown_event_fails(ledger: tuple[Path, list[str]]) -> None:
    data_dir, _ = ledger
    with pytest.raises(ProofError, match="not in the ledger"):
        prove_inclusion(data_dir, event_id="ab" * 32)
    with pytest.raises(ProofError, match="not in the ledger"):
        prove_lineage(data_dir, "ab" * 32)
