"""Human approval through the pure engine: who may approve, the quorum, refusal, expiry,
revocation and suspension while pending, and a restore that keeps the pending state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ledger.core.approval_events import ApprovalGiven, ApprovalRefused, ApprovalRequired
from ledger.core.envelope import (
    event_id,
    parse_envelope,
    parse_payload,
    sign_event,
    verify_envelope,
)
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRevoked,
    Event,
)
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.core.streams import Stream
from ledger.errors import ConfigError, Reason, Rejected, Unavailable
from processors.core.approvals import ApprovalRule, ended_subject, parse_rule, rule_for
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.outcomes import Outcome
from processors.policy import PolicyBundle
from tests.factories import ALICE, AUTHORITY, T0, request, seeded_signer
from tests.unit.test_engine import CountingLimiter, Result, TablePolicy

AUTH_ID = "govledger:authority"
ANN = seeded_signer("ann")
BEN = seeded_signer("ben")
CAL = seeded_signer("cal")
EVE = seeded_signer("eve-other-tenant")
RULE = ApprovalRule("payments-approver", 2, timedelta(minutes=15))
EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"


def ring() -> KeyRing:
    approver = frozenset({"payments-approver"})
    return KeyRing([
        Principal("agent:alice", "acme", ALICE.public_key,
                  frozenset({"requester", "payments-approver"})),
        Principal("human:ann", "acme", ANN.public_key, approver),
        Principal("human:ben", "acme", BEN.public_key, approver),
        Principal("human:cal", "acme", CAL.public_key, frozenset({"auditor"})),
        Principal("human:eve", "globex", EVE.public_key, approver),
        Principal(AUTH_ID, "*", AUTHORITY.public_key, frozenset({"authority"})),
    ])


@dataclass
class ApprovingPolicy(TablePolicy):
    """The table double, with ``write`` needing two payments approvers."""

    approval_rules: dict[str, ApprovalRule] = field(
        default_factory=lambda: {"permit-write": RULE})


def engine() -> Engine:
    table = {("agent:alice", act): Result(True, ("permit-" + act,))
             for act in ("read", "write")}
    return Engine(authority=AUTHORITY, authority_identity=AUTH_ID, keyring=ring(),
                  policy=ApprovingPolicy(table), limiter=CountingLimiter(), limits=Limits())


def events(outcome: Outcome) -> list[Event]:
    return [parse_payload(p.payload_type, p.payload)
            for p in (parse_envelope(o.value) for o in outcome.outputs)]


def ask_write(eng: Engine, now: datetime = T0, **kwargs: object) -> Outcome:
    raw = sign_event(request(actions=("write",), **kwargs), ALICE)  # type: ignore[arg-type]
    return eng.handle(Stream.REQUESTS, raw, now)


def answer(eng: Engine, pending: Outcome, key: Signer, who: str, *, refuse: bool = False,
           tenant: str = "acme", now: datetime = T0, nonce: str = "approval-nonce-0001",
           request_id: str | None = None, root: str | None = None) -> Outcome:
    kind = ApprovalRefused if refuse else ApprovalGiven
    rid = request_id or pending.subject
    event = kind(signer=who, tenant=tenant, nonce=nonce, issued_at=now, request_id=rid,
                 root=root or rid, reason="checked the invoice")
    return eng.handle(Stream.REQUESTS, sign_event(event, key), now)


def refusal(outcome: Outcome) -> Reason:
    assert outcome.allow is False
    [denial] = events(outcome)
    assert isinstance(denial, AuthorizationDenied) and denial.request_id == outcome.subject
    return denial.reasons[0]


# -- the rule and the policy annotation ------------------------------------------------------

def test_rule_text_parses_and_bad_rules_are_refused() -> None:
    assert parse_rule("role=payments-approver,k=2,ttl=900") == RULE
    for bad in ("role=x,k=0,ttl=9", "role=x,k=9,ttl=9", "k=2,role=x,ttl=9", "role=x,k=2",
                "role=x,k=2,ttl=999999", "role=X,k=1,ttl=9"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_determining_policies_asking_different_approvals_deny() -> None:
    other = ApprovalRule("ops", 1, timedelta(seconds=60))
    assert rule_for({"a": RULE}, ("a", "b")) == RULE
    assert rule_for({"a": RULE}, ("b",)) is None
    with pytest.raises(Rejected) as caught:
        rule_for({"a": RULE, "b": other}, ("a", "b"))
    assert caught.value.reason is Reason.POLICY_DENY


def test_example_policy_marks_large_transfers_for_approval() -> None:
    bundle = PolicyBundle.load(EXAMPLES)
    assert bundle.approval_rules == {"payments-transfer-over-limit-approved": RULE}


@pytest.mark.parametrize(("annotation", "effect"), [
    ('@approval("role=ops,k=1")', "permit"), ('@approval("role=ops,k=1,ttl=60")', "forbid")])
def test_a_bad_approval_annotation_refuses_the_bundle(annotation: str, effect: str) -> None:
    files = {"schema.cedarschema": (EXAMPLES / "schema.cedarschema").read_text(),
             "p.cedar": f'@id("p")\n{annotation}\n{effect} (principal, action, resource);\n'}
    with pytest.raises(ConfigError, match="@approval"):
        PolicyBundle.from_files(files)


# -- pending, quorum, refusal ---------------------------------------------------------------

def test_a_request_needing_approval_gets_a_signed_pending_answer() -> None:
    eng = engine()
    pending = ask_write(eng)
    assert pending.allow is None
    [required] = events(pending)
    assert isinstance(required, ApprovalRequired)
    verify_envelope(pending.outputs[0].value, ring(), T0)
    assert (required.request_id, required.role, required.k) == (pending.subject,
                                                                 "payments-approver", 2)
    assert required.deadline == T0 + timedelta(minutes=15)
    assert required.artifact.scope.actions == ("write",)
    assert pending.outputs[0].key == pending.subject.encode()  # its tree's partition


def test_the_deadline_is_never_after_the_artifact_window() -> None:
    [required] = events(ask_write(engine(), ttl=timedelta(minutes=5)))
    assert isinstance(required, ApprovalRequired)
    assert required.deadline == T0 + timedelta(minutes=5)


def test_quorum_of_distinct_approvers_grants_naming_the_approvals() -> None:
    eng = engine()
    pending = ask_write(eng)
    first = answer(eng, pending, ANN, "human:ann")
    assert first.outputs == () and first.allow is None
    second = answer(eng, pending, BEN, "human:ben", nonce="approval-nonce-0002")
    assert second.allow is True
    [grant] = events(second)
    assert isinstance(grant, AuthorizationGranted) and grant.request_id == pending.subject
    meta = grant.artifact.governance
    assert meta["approval.1"] == first.subject and meta["approval.2"] == second.subject
    assert meta["approval.required"] == verify_envelope(pending.outputs[0].value, ring(),
                                                        T0).event_id
    assert eng.state.lineage.grants  # the grant is in force for executions
    assert refusal(answer(eng, pending, CAL, "human:cal", nonce="approval-nonce-0003")) is \
        Reason.NOT_PENDING  # decided: nothing pending any more


def test_one_refusal_denies_the_request() -> None:
    eng = engine()
    pending = ask_write(eng)
    answer(eng, pending, ANN, "human:ann")
    refused = answer(eng, pending, BEN, "human:ben", refuse=True, nonce="approval-nonce-0002")
    [denial] = events(refused)
    assert isinstance(denial, AuthorizationDenied)
    assert (denial.request_id, denial.reasons) == (pending.subject, (Reason.APPROVAL_REFUSED,))


@pytest.mark.parametrize(("key", "who", "tenant", "reason"), [
    (CAL, "human:cal", "acme", Reason.NOT_APPROVER),
    (ALICE, "agent:alice", "acme", Reason.SELF_APPROVAL),
    (EVE, "human:eve", "globex", Reason.TENANT_MISMATCH),
])
def test_an_approval_that_cannot_count_is_refused_naming_its_id(
        key: Signer, who: str, tenant: str, reason: Reason) -> None:
    eng = engine()
    pending = ask_write(eng)
    assert refusal(answer(eng, pending, key, who, tenant=tenant)) is reason
    assert refusal(answer(eng, pending, key, who, tenant=tenant, refuse=True,
                          nonce="approval-nonce-0009")) is reason  # a refusal too
    assert eng.approvals.pending[pending.subject].approvals == {}


def test_the_same_approver_counts_once() -> None:
    eng = engine()
    pending = ask_write(eng)
    answer(eng, pending, ANN, "human:ann")
    again = answer(eng, pending, ANN, "human:ann", nonce="approval-nonce-0002")
    assert refusal(again) is Reason.APPROVAL_DUPLICATE


def test_an_approval_for_a_request_that_needed_none_is_refused() -> None:
    eng = engine()
    granted = eng.handle(Stream.REQUESTS, sign_event(request(), ALICE), T0)
    assert granted.allow is True
    assert refusal(answer(eng, granted, ANN, "human:ann")) is Reason.NOT_PENDING


def test_an_approval_in_another_tree_is_refused() -> None:
    eng = engine()
    pending = ask_write(eng)
    event = ApprovalGiven(signer="human:ann", tenant="acme", nonce="approval-nonce-0001",
                          issued_at=T0, request_id=pending.subject, root="0" * 64)
    assert refusal(eng.handle(Stream.REQUESTS, sign_event(event, ANN), T0)) is Reason.NOT_PENDING


# -- what ends a pending request ------------------------------------------------------------

def test_the_deadline_denies_at_the_next_input_and_late_approvals_say_expired() -> None:
    eng = engine()
    pending = ask_write(eng)
    late = T0 + timedelta(minutes=15)
    other = eng.handle(Stream.REQUESTS, sign_event(request(nonce="nonce-other-00001",
                                                           issued_at=late), ALICE), late)
    expired, grant = events(other)
    assert isinstance(expired, AuthorizationDenied) and isinstance(grant, AuthorizationGranted)
    assert (expired.request_id, expired.reasons) == (pending.subject, (Reason.APPROVAL_EXPIRED,))
    assert refusal(answer(eng, pending, ANN, "human:ann", now=late)) is Reason.APPROVAL_EXPIRED


def test_an_approval_after_the_deadline_is_refused_and_ends_the_request() -> None:
    eng = engine()
    pending = ask_write(eng)
    late = T0 + timedelta(minutes=16)
    out = answer(eng, pending, ANN, "human:ann", now=late)
    expired, refused = events(out)
    assert isinstance(expired, AuthorizationDenied) and isinstance(refused, AuthorizationDenied)
    assert (expired.request_id, expired.reasons) == (pending.subject, (Reason.APPROVAL_EXPIRED,))
    assert (refused.request_id, refused.reasons) == (out.subject, (Reason.APPROVAL_EXPIRED,))


def test_a_suspension_while_pending_ends_it_denied() -> None:
    eng = engine()
    pending = ask_write(eng)
    answer(eng, pending, ANN, "human:ann")
    eng.governance.suspended_tenants.add("acme")
    out = answer(eng, pending, BEN, "human:ben", nonce="approval-nonce-0002")
    ended = events(out)[0]
    assert isinstance(ended, AuthorizationDenied)
    assert (ended.request_id, ended.reasons) == (pending.subject, (Reason.TENANT_SUSPENDED,))
    assert refusal(replace_first(out)) is Reason.NOT_PENDING
    assert not any(isinstance(e, AuthorizationGranted) for e in events(out))


def replace_first(outcome: Outcome) -> Outcome:
    """The approval's own answer (after the denials the sweep put first)."""
    return Outcome(outcome.subject, outcome.outputs[-1:], outcome.allow, outcome.reasons)


def test_a_revoked_parent_while_pending_ends_the_child_denied() -> None:
    eng = engine()
    root = eng.handle(Stream.REQUESTS, sign_event(request(actions=("read", "write"),
                                                          resource="db/*"), ALICE), T0)
    # the root needs approval too (write): approve it, then ask a child under it
    answer(eng, root, ANN, "human:ann")
    granted = answer(eng, root, BEN, "human:ben", nonce="approval-nonce-0002")
    artifact_id = verify_envelope(granted.outputs[0].value, ring(), T0).event_id
    child = eng.handle(Stream.REQUESTS, sign_event(request(
        actions=("write",), resource="db/orders/*", root=root.subject, parent=artifact_id,
        nonce="nonce-child-00001"), ALICE), T0)
    assert child.allow is None
    revoke = AuthorizationRevoked(signer="agent:alice", tenant="acme", nonce="revoke-nonce-0001",
                                  issued_at=T0, artifact_id=artifact_id, root=root.subject)
    eng.handle(Stream.REVOCATIONS, sign_event(revoke, ALICE), T0)
    out = answer(eng, child, ANN, "human:ann", nonce="approval-nonce-0003",
                 request_id=child.subject, root=root.subject)
    assert refusal(replace_first(out)) is Reason.NOT_PENDING  # ended just before it
    ended = events(out)[0]
    assert isinstance(ended, AuthorizationDenied)
    assert (ended.request_id, ended.reasons) == (child.subject, (Reason.PARENT_REVOKED,))


# -- restore -----------------------------------------------------------------------------

def replay_into(history: list[tuple[bytes, datetime, Outcome]]) -> Engine:
    fresh = engine()
    for raw, arrival, outcome in history:
        fresh.restore(Stream.REQUESTS, raw, arrival, outcome)
    return fresh


def test_a_restart_keeps_pending_state_and_approvals() -> None:
    live = engine()
    history: list[tuple[bytes, datetime, Outcome]] = []
    raw = sign_event(request(actions=("write",)), ALICE)
    pending = live.handle(Stream.REQUESTS, raw, T0)
    history.append((raw, T0, pending))
    approval = ApprovalGiven(signer="human:ann", tenant="acme", nonce="approval-nonce-0001",
                             issued_at=T0, request_id=pending.subject, root=pending.subject)
    raw_ann = sign_event(approval, ANN)
    history.append((raw_ann, T0, live.handle(Stream.REQUESTS, raw_ann, T0)))
    after = replay_into(history)
    assert after.approvals.pending[pending.subject].approvals == {"human:ann":
                                                                  history[1][2].subject}
    assert refusal(answer(after, pending, ANN, "human:ann", nonce="approval-nonce-0002")) is \
        Reason.APPROVAL_DUPLICATE
    granted = answer(after, pending, BEN, "human:ben", nonce="approval-nonce-0003")
    assert granted.allow is True
    assert answer(live, pending, BEN, "human:ben", nonce="approval-nonce-0003") == granted


def test_a_deadline_that_passed_while_down_denies_at_the_first_input() -> None:
    live = engine()
    raw = sign_event(request(actions=("write",)), ALICE)
    pending = live.handle(Stream.REQUESTS, raw, T0)
    after = replay_into([(raw, T0, pending)])
    late = T0 + timedelta(hours=1)
    out = answer(after, pending, ANN, "human:ann", now=late)
    assert [e.reasons for e in events(out) if isinstance(e, AuthorizationDenied)] == [
        (Reason.APPROVAL_EXPIRED,), (Reason.APPROVAL_EXPIRED,)]


def test_expire_ends_a_request_past_its_deadline_without_an_input() -> None:
    eng = engine()
    pending = ask_write(eng)
    assert eng.expire(T0 + timedelta(minutes=14)) == []  # not yet
    late = T0 + timedelta(minutes=15)
    [(raw, ended)] = eng.expire(late)
    [denial] = events(ended)
    assert isinstance(denial, AuthorizationDenied)
    assert (denial.request_id, denial.reasons) == (pending.subject, (Reason.APPROVAL_EXPIRED,))
    assert (ended.allow, ended.reasons) == (False, (Reason.APPROVAL_EXPIRED,))
    required = parse_payload(parse_envelope(raw).payload_type, parse_envelope(raw).payload)
    assert isinstance(required, ApprovalRequired) and raw == pending.outputs[0].value
    assert ended.subject == ended_subject(event_id(parse_envelope(raw).payload))
    assert eng.expire(late) == []  # ended once
    assert refusal(answer(eng, pending, ANN, "human:ann", now=late)) is Reason.APPROVAL_EXPIRED


def test_a_request_expired_without_an_input_stays_ended_after_restore() -> None:
    live = engine()
    raw = sign_event(request(actions=("write",)), ALICE)
    pending = live.handle(Stream.REQUESTS, raw, T0)
    late = T0 + timedelta(hours=1)
    [(required, ended)] = live.expire(late)
    after = engine()
    after.restore(Stream.REQUESTS, raw, T0, pending)
    after.restore(Stream.DECISIONS, required, late, ended)
    assert after.approvals.pending == {}
    assert after.expire(late) == []
    assert refusal(answer(after, pending, ANN, "human:ann", now=late)) is Reason.APPROVAL_EXPIRED


def test_a_closed_request_stays_closed_after_restore() -> None:
    live = engine()
    raw = sign_event(request(actions=("write",)), ALICE)
    pending = live.handle(Stream.REQUESTS, raw, T0)
    refusal_raw = sign_event(ApprovalRefused(signer="human:ann", tenant="acme",
                                             nonce="approval-nonce-0001", issued_at=T0,
                                             request_id=pending.subject,
                                             root=pending.subject), ANN)
    refused = live.handle(Stream.REQUESTS, refusal_raw, T0)
    after = replay_into([(raw, T0, pending), (refusal_raw, T0, refused)])
    assert after.approvals.pending == {}
    assert refusal(answer(after, pending, BEN, "human:ben", nonce="approval-nonce-0002")) is \
        Reason.NOT_PENDING


def test_restore_refuses_a_pending_answer_the_authority_did_not_sign() -> None:
    live = engine()
    raw = sign_event(request(actions=("write",)), ALICE)
    pending = live.handle(Stream.REQUESTS, raw, T0)
    [required] = events(pending)
    forged = Outcome(pending.subject, (pending.outputs[0].__class__(
        Stream.DECISIONS, pending.outputs[0].key, sign_event(required, ANN)),))
    with pytest.raises(Unavailable, match="does not verify"):
        replay_into([(raw, T0, forged)])


def test_a_request_whose_context_leaves_no_room_for_the_approvals_is_denied() -> None:
    eng = engine()
    crowded = request(actions=("write",)).model_copy(
        update={"context": {f"k{n:02d}": n for n in range(24)}})
    out = eng.handle(Stream.REQUESTS, sign_event(crowded, ALICE), T0)
    assert out.allow is False and out.reasons == (Reason.POLICY_DENY,)
    roomy = request(actions=("write",), nonce="nonce-roomy-00001").model_copy(
        update={"context": {f"k{n:02d}": n for n in range(23)}})
    assert eng.handle(Stream.REQUESTS, sign_event(roomy, ALICE), T0).allow is None


def test_conflicting_approval_rules_deny_through_the_engine() -> None:
    table = {("agent:alice", "write"): Result(True, ("permit-write", "permit-other"))}
    policy = ApprovingPolicy(table, approval_rules={
        "permit-write": RULE, "permit-other": ApprovalRule("ops", 1, timedelta(seconds=60))})
    eng = Engine(authority=AUTHORITY, authority_identity=AUTH_ID, keyring=ring(),
                 policy=policy, limiter=CountingLimiter(), limits=Limits())
    out = ask_write(eng)
    assert out.allow is False and out.reasons == (Reason.POLICY_DENY,)


def test_a_request_cannot_name_approvals_itself() -> None:
    """approval.* metadata in an artifact is the authority's record: a requester who put it
    in a context would forge the evidence of approvals that never happened."""
    eng = engine()
    forged = request(nonce="nonce-forged-0001").model_copy(
        update={"context": {"approval.1": "0" * 64}})
    out = eng.handle(Stream.REQUESTS, sign_event(forged, ALICE), T0)
    assert out.allow is False and out.reasons == (Reason.MALFORMED,)
