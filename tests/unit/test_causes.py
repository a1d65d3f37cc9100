"""The causal rule (ledger/core/causes.py): what each kind answers or refers to, read the
same from a validated model and from the stored bytes (the sequencer and the audit)."""

from __future__ import annotations

from ledger.core.causes import CAUSAL_KINDS, DECISION_KINDS, Cause, Role, causes, provides
from ledger.core.envelope import parse_envelope, sign_event_with_id
from ledger.core.events import AuthorizationDenied, AuthorizationRevoked, Event, RevocationApplied
from ledger.core.execution_events import (
    ExecutionAllowed,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRefused,
)
from ledger.core.governance_events import (
    GovernanceApplied,
    GovernanceApproved,
    PolicyPublished,
    TenantSuspended,
)
from ledger.errors import Reason
from ledger.log import index
from ledger.log.causal import leaf_causes
from tests.factories import ALICE, AUTHORITY, ENV, T0
from tests.ledger_support import lineage_chain

A, B, C = ("a" * 64), ("b" * 64), ("c" * 64)
AUTH = {"signer": "govledger:authority", "tenant": "acme", "issued_at": T0}


def _model(envelope: bytes) -> Event:
    from ledger.core.envelope import PAYLOAD_TYPES
    parsed = parse_envelope(envelope)
    return PAYLOAD_TYPES[parsed.payload_type].model_validate_json(parsed.payload)


def test_a_lineage_chain_names_each_previous_event_and_the_parent_grant() -> None:
    (_, root), (g1_env, g1), (child_env, child), (g2_env, g2), (ex_env, _) = lineage_chain()
    assert causes(_model(g1_env)) == (Cause(root, Role.EVENT),)
    assert causes(_model(child_env)) == (Cause(g1, Role.EVENT),)       # a delegation
    assert causes(_model(g2_env)) == (Cause(child, Role.EVENT), Cause(g1, Role.EVENT))
    assert causes(_model(ex_env)) == (Cause(g2, Role.EVENT),)


def test_a_root_request_and_policy_events_have_no_cause() -> None:
    (root_env, _), *_ = lineage_chain()
    assert causes(_model(root_env)) == ()
    policy = PolicyPublished(**AUTH, nonce="policy-000000000001", policy_digest=ENV,
                             version="1", files={"p.cedar": "permit(principal, action, resource);"})
    assert causes(policy) == ()
    assert causes(TenantSuspended(**AUTH, nonce="suspend-0000000001")) == ()


def test_governance_answers_and_approvals_follow_the_event_they_name() -> None:
    applied = GovernanceApplied(**AUTH, nonce="applied-0000000001", request_id=A,
                                applied_kind="TenantSuspended", position=3)
    assert causes(applied) == (Cause(A, Role.EVENT),)
    approval = GovernanceApproved(**AUTH, nonce="approve-0000000001", governance_id=B)
    assert causes(approval) == (Cause(B, Role.EVENT),)


def test_verdicts_acknowledgements_and_reports_follow_what_they_answer() -> None:
    common = {**AUTH, "artifact_id": A, "root": B}
    allowed = ExecutionAllowed(**common, nonce="v-000000000000001", execution_id=C)
    refused = ExecutionRefused(**common, nonce="v-000000000000002", execution_id=C,
                               reasons=(Reason.ARTIFACT_REVOKED,))
    done = ExecutionCompleted(**{**common, "signer": "agent:alice"}, nonce="x-000000000000001",
                              execution_id=C)
    failed = ExecutionFailed(**{**common, "signer": "agent:alice"}, nonce="x-000000000000002",
                             execution_id=C, error="boom")
    applied = RevocationApplied(**common, nonce="r-000000000000001", revocation_id=C,
                                revoked=(A,))
    revoked = AuthorizationRevoked(**{**common, "signer": "agent:alice"},
                                   nonce="k-000000000000001")
    assert causes(allowed) == causes(refused) == (Cause(C, Role.EVENT),)
    assert causes(done) == causes(failed) == (Cause(C, Role.EVENT), Cause(C, Role.DECISION))
    assert causes(applied) == (Cause(C, Role.EVENT),)
    assert causes(revoked) == (Cause(A, Role.EVENT),)


def test_a_denial_of_unauthenticated_input_names_no_cause() -> None:
    # processors/core/engine.py _reject_input: tenant "*", no root, the raw bytes' hash.
    raw = AuthorizationDenied(**{**AUTH, "tenant": "*"}, nonce="d-000000000000001",
                              request_id=A, reasons=(Reason.SIGNATURE_INVALID,))
    of_request = AuthorizationDenied(**AUTH, nonce="d-000000000000002", request_id=A,
                                     reasons=(Reason.POLICY_DENY,), root=A)
    assert causes(raw) == ()
    assert causes(of_request) == (Cause(A, Role.EVENT),)


def test_causes_read_from_the_stored_bytes_equal_the_models() -> None:
    events: list[bytes] = [env for env, _ in lineage_chain()]
    common = {**AUTH, "artifact_id": A, "root": B}
    for event in (ExecutionAllowed(**common, nonce="v-000000000000001", execution_id=C),
                  RevocationApplied(**common, nonce="r-000000000000001", revocation_id=C,
                                    revoked=(A,)),
                  AuthorizationDenied(**{**AUTH, "tenant": "*"}, nonce="d-000000000000001",
                                      request_id=A, reasons=(Reason.MALFORMED,))):
        events.append(sign_event_with_id(event, AUTHORITY)[0])
    events.append(sign_event_with_id(ExecutionCompleted(
        **{**common, "signer": "agent:alice"}, nonce="x-000000000000001", execution_id=C),
        ALICE)[0])
    for envelope in events:
        model = _model(envelope)
        assert leaf_causes(model.KIND, envelope) == causes(model)


def test_a_decision_provides_the_decision_about_its_subject() -> None:
    assert provides(A, "ExecutionAllowed", C) == (Cause(A, Role.EVENT), Cause(C, Role.DECISION))
    assert provides(A, "ExecutionRequested", C) == (Cause(A, Role.EVENT),)


def test_the_core_and_the_index_agree_on_decision_kinds() -> None:
    assert set(index.DECISION_KINDS) == DECISION_KINDS
    assert DECISION_KINDS <= CAUSAL_KINDS


def test_the_sequencers_verifier_gives_the_causes_the_leaf_bytes_give() -> None:
    from ledger.log.sequencer import keyring_verifier
    from tests.factories import default_ring
    verify = keyring_verifier(default_ring())
    for envelope, _ in lineage_chain():
        record = verify(envelope)
        assert record.causes == leaf_causes(record.kind, envelope)


def test_every_execution_outcome_points_back_to_its_execution_request() -> None:
    """The lineage walk (ledger.log.proofs.lineage_bundle) follows parent_ref: a verdict and
    a report of an execution both point at the execution request."""
    about = {**AUTH, "artifact_id": A, "root": B, "execution_id": C}
    for event in (ExecutionAllowed(**about, nonce="allowed-000000001"),
                  ExecutionRefused(**about, nonce="refused-000000001",
                                   reasons=(Reason.EXPIRED,)),
                  ExecutionCompleted(**about, nonce="completed-0000001"),
                  ExecutionFailed(**about, nonce="failed-0000000001", error="boom")):
        assert event.parent_ref() == C, event.KIND
