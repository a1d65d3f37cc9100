"""`govledger demo` plays every expected outcome on the real embedded stack."""

from __future__ import annotations

import base64
import json
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from ledger.core.bundles import verify_bundle
from ledger.core.envelope import parse_envelope
from ledger.demo import Demo, run_demo
from ledger.keyfiles import load_signer_keys
from ledger.log.audit import audit_ledger
from ledger.log.causal import check_order
from ledger.log.ledger_dir import read_vkey
from ledger.log.reports import read_alerts
from ledger.log.store import LedgerStore

pytestmark = pytest.mark.e2e


def test_demo_outcomes_are_all_as_expected_and_logged(tmp_path: Path) -> None:
    out = StringIO()
    data = tmp_path / "data"
    assert run_demo(data, Console(file=out, width=200)) is True, out.getvalue()
    text = out.getvalue()
    for reason in ("POLICY_DENY", "REPLAY", "SCOPE_WIDENING", "ENV_MISMATCH", "EXPIRED",
                   "ARTIFACT_REVOKED", "PARENT_REVOKED", "ALERT execution-without-allowance",
                   "PENDING payments-approver", "NOT_APPROVER", "ARTIFACT_CONSUMED",
                   "APPROVAL_REFUSED", "TENANT_SUSPENDED"):
        assert reason in text
    assert "all outcomes as expected" in text
    with LedgerStore(data / "ledger.db") as store:  # the honest steps raised no alert
        assert [a.rule for _, _, a in read_alerts(store)] == ["execution-without-allowance"]
    bundle = json.loads((data / "evidence.json").read_text())
    result = verify_bundle(bundle, read_vkey(data),
                           load_signer_keys(keyring=data / "keyring.json"))
    assert len(result.event_ids) >= 8  # execution -> ... -> root request
    assert result.signers_checked
    # the approved transfer's evidence holds its approvals: the pending answer and two
    approved = json.loads((data / "evidence-approved.json").read_text())
    verify_bundle(approved, read_vkey(data), load_signer_keys(keyring=data / "keyring.json"))
    kinds = sorted(json.loads(parse_envelope(base64.b64decode(hop["leaf"])).payload)["kind"]
                   for hop in approved["approvals"])
    assert kinds == ["ApprovalGiven", "ApprovalGiven", "ApprovalRequired"]


def test_the_demo_ledger_is_in_causal_order(tmp_path: Path) -> None:
    # The real pipeline (processor + sequencer on the embedded broker): requests, grants,
    # delegations, executions, a revocation cascade; no leaf precedes what it answers.
    data = tmp_path / "data"
    assert run_demo(data, Console(file=StringIO(), width=200)) is True
    report = audit_ledger(data, data / "keyring.json")
    assert report.ok, report.problems
    with LedgerStore(data / "ledger.db") as store:
        order = check_order(store)
        kinds = {leaf.kind for leaf in store.iter_leaves()}
    assert order.first_violation is None
    # The only causes absent from the log: the execution request and its verdict that the
    # demo's rogue report (an execution nobody allowed, which the monitor alerts on) names.
    assert order.leaves_with_causes >= 20 and order.absent_causes == 2
    assert {"AuthorizationGranted", "ExecutionAllowed", "ExecutionRefused",
            "RevocationApplied"} <= kinds


def test_a_step_with_an_unexpected_outcome_fails_the_demo() -> None:
    demo = Demo(Path("unused"), Console(file=StringIO()))
    step = demo.record("x", "DENIED POLICY_DENY", None, "ALLOWED")
    assert not step.ok
    assert demo.record("y", "DENIED POLICY_DENY", None, "DENIED", "REPLAY").ok is False
    assert demo.record("z", "DENIED REPLAY", None, "DENIED", "REPLAY").ok is True
