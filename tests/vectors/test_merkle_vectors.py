"""Known-answer Merkle vectors (tests/vectors/merkle/*.json, RFC 6962 test data from
transparency-dev/merkle): published roots and proofs verify, every named corruption fails,
and proofs built the store's way (plan -> node ids -> combine) equal the published ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.core import merkle
from ledger.core.merkle import CompactRange, NodeId
from ledger.errors import ProofError
from tests.vectors.merkle.make_merkle_vectors import consistency_cases, inclusion_cases

HERE = Path(__file__).resolve().parent / "merkle"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / f"{name}.json").read_text())
    return doc


LEAVES = [bytes.fromhex(h) for h in load("roots")["leaves"]]


def nodes() -> dict[NodeId, bytes]:
    compact, out = CompactRange(), {}
    for i, leaf in enumerate(LEAVES):
        out.update(zip(merkle.appended_nodes(i), compact.append(merkle.leaf_hash(leaf)),
                       strict=True))
    return out


NODES = nodes()


def hashes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_vector_files_match_their_generator() -> None:
    assert load("inclusion")["cases"] == json.loads(json.dumps(inclusion_cases()))
    assert load("consistency")["cases"] == json.loads(json.dumps(consistency_cases()))


@pytest.mark.parametrize("case", load("roots")["cases"], ids=lambda c: c["desc"])
def test_roots(case: dict[str, Any]) -> None:
    size = case["tree_size"]
    assert merkle.root_of(LEAVES[:size]).hex() == case["root"]
    assert merkle.fold([NODES[n] for n in merkle.root_plan(size)]).hex() == case["root"]


@pytest.mark.parametrize("case", load("inclusion")["cases"], ids=lambda c: c["desc"])
def test_inclusion(case: dict[str, Any]) -> None:
    args = (case["leaf_index"], case["tree_size"], bytes.fromhex(case["leaf_hash"]),
            hashes(case["proof"]), bytes.fromhex(case["root"]))
    if case["want_error"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)
        plan = merkle.inclusion_plan(case["leaf_index"], case["tree_size"])
        assert plan.combine(NODES) == hashes(case["proof"])


@pytest.mark.parametrize("case", load("consistency")["cases"], ids=lambda c: c["desc"])
def test_consistency(case: dict[str, Any]) -> None:
    args = (case["old_size"], case["new_size"], bytes.fromhex(case["old_root"]),
            bytes.fromhex(case["new_root"]), hashes(case["proof"]))
    if case["want_error"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
        plan = merkle.consistency_plan(case["old_size"], case["new_size"])
        assert plan.combine(NODES) == hashes(case["proof"])
