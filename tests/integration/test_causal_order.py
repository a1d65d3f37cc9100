"""Causal leaf order (issue 15 item 4) on real SQLite: the sequencer appends causes first,
appends late what has no cause in reach (counted), and the audit names the first leaf that
precedes its cause. The Kafka side: test_causal_order_kafka.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.core.envelope import sign_event_with_id
from ledger.log.audit import audit_ledger
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from tests.factories import ALICE, T0, default_ring
from tests.ledger_support import (
    grant,
    leaf_order,
    lineage_chain,
    make_ledger,
    write_keyring,
)

pytestmark = pytest.mark.integration
order = leaf_order


def test_submit_appends_a_chain_that_arrives_backwards_causes_first(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    chain = lineage_chain()
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    result = seq.submit([envelope for envelope, _ in reversed(chain)])
    seq.close()
    assert (result.appended, result.late) == (5, ())
    assert order(data_dir, *(event_id for _, event_id in chain)) == [0, 1, 2, 3, 4]
    assert audit_ledger(data_dir, write_keyring(tmp_path / "keyring.json")).ok


def test_audit_reports_the_first_leaf_that_precedes_its_cause(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    (root_env, root_id), (grant_env, grant_id), *_ = lineage_chain()
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    result = seq.submit([grant_env])  # its request is in no batch of the call: late
    seq.submit([root_env])
    seq.close()
    assert [r.late for r in result.late] == ["cause-missing"]
    report = audit_ledger(data_dir)
    assert not report.ok
    assert report.first_bad_index == 0
    assert report.what is not None and "leaf 0 precedes its cause at leaf 1" in report.what
    assert order(data_dir, grant_id, root_id) == [0, 1]


def test_an_unanswered_grant_is_appended_late_with_its_reason(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    lone, lone_id = grant("f" * 64, "f" * 64, None, 0, "lonely-grant-0001")
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    result = seq.submit([lone])
    seq.close()
    assert [(r.late, r.arrival.record.event_id) for r in result.late] == [
        ("cause-missing", lone_id)]
    assert result.late_by_reason() == {"cause-missing": 1}
    assert audit_ledger(data_dir).ok  # an absent cause breaks no order


def _verdict_and_report(execution_id: str, artifact_id: str, root_id: str
                        ) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    from ledger.core.execution_events import ExecutionAllowed, ExecutionCompleted
    from tests.factories import AUTHORITY
    common = {"tenant": "acme", "issued_at": T0, "artifact_id": artifact_id, "root": root_id,
              "execution_id": execution_id}
    allowed = sign_event_with_id(ExecutionAllowed(
        signer="govledger:authority", nonce="causal-allowed-0001", **common), AUTHORITY)
    done = sign_event_with_id(ExecutionCompleted(
        signer="agent:alice", nonce="causal-completed-01", **common), ALICE)
    return allowed, done


def test_a_report_waits_for_the_verdict_on_its_execution_and_the_audit_checks_it(
        tmp_path: Path) -> None:
    chain = lineage_chain()
    (_, root_id), *_, (_, grant2_id), (_, execution_id) = chain
    (allowed, allowed_id), (done, done_id) = _verdict_and_report(execution_id, grant2_id,
                                                                 root_id)
    in_order = make_ledger(tmp_path / "a")
    seq = open_ledger(in_order, keyring_verifier(default_ring()))
    seq.submit([envelope for envelope, _ in chain])
    assert seq.submit([done, allowed]).late == ()  # the report waits for the verdict
    seq.close()
    assert order(in_order, allowed_id, done_id) == [5, 6]
    assert audit_ledger(in_order).ok

    reversed_ = make_ledger(tmp_path / "b")
    seq = open_ledger(reversed_, keyring_verifier(default_ring()))
    seq.submit([envelope for envelope, _ in chain])
    seq.submit([done])  # its verdict is in no batch of this call: appended late
    seq.submit([allowed])
    seq.close()
    report = audit_ledger(reversed_)
    assert report.first_bad_index == 5
    assert report.what is not None and "the decision about" in report.what


def test_a_verifier_that_gives_no_causes_still_orders_the_chain(tmp_path: Path) -> None:
    # Verify may be any callable returning a LeafRecord (a live keyring's, say): without
    # causes in it, the sequencer reads them from the leaf bytes.
    import dataclasses

    from ledger.log.records import LeafRecord
    keyring_verify = keyring_verifier(default_ring())

    def plain(data: bytes) -> LeafRecord:
        return dataclasses.replace(keyring_verify(data), causes=None)

    data_dir = make_ledger(tmp_path)
    chain = lineage_chain()
    seq = open_ledger(data_dir, plain)
    assert seq.submit([envelope for envelope, _ in reversed(chain)]).late == ()
    seq.close()
    assert order(data_dir, *(event_id for _, event_id in chain)) == [0, 1, 2, 3, 4]
