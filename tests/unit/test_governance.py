"""Governance events decided by the engine (ledger/core/governance.py through
processors/core/governing.py): who may govern, quorum, the kill switch, live policies,
replay, and restore from the journal. Pure: no broker, no files."""

from __future__ import annotations

import base64
import itertools
from datetime import datetime, timedelta

import pytest

from ledger.core.envelope import read_stored, sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event
from ledger.core.execution_events import ExecutionRefused, ExecutionRequested
from ledger.core.governance import GovernanceState
from ledger.core.governance_events import (
    GovernanceApplied,
    GovernanceApproved,
    GovernanceConfigured,
    PolicyPromoted,
    PolicyPublished,
    PrincipalRegistered,
    PrincipalResumed,
    PrincipalRevoked,
    PrincipalSuspended,
    TenantResumed,
    TenantSuspended,
)
from ledger.core.keys import Principal, Signer
from ledger.core.streams import Stream
from ledger.datadir import example_policies
from ledger.errors import Reason, Unavailable
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.outcomes import Outcome
from processors.policy import PolicyBundle
from tests.factories import ALICE, AUTHORITY, ENV, T0, request, seeded_signer

OPERATOR = seeded_signer("operator")
ADMIN2 = seeded_signer("admin2")
ACME_ADMIN = seeded_signer("acme-admin")
BOB = seeded_signer("bob")
RUNNER = seeded_signer("runner")
AUTH_ID = "govledger:authority"
_nonces = itertools.count()


def example_files() -> dict[str, str]:
    return dict(PolicyBundle.load(example_policies()).files())


class Unlimited:
    def allow(self, identity: str, now: float) -> bool:
        return True


def nonce() -> str:
    return f"gov-nonce-{next(_nonces):08d}"


def registration(signer: str, who: str, tenant: str, key: Signer, *roles: str,
                 at: datetime = T0) -> PrincipalRegistered:
    return PrincipalRegistered(signer=signer, tenant=tenant, nonce=nonce(), issued_at=at,
                               identity=who, public_key=base64.b64encode(key.public_key).decode(),
                               key_id=key.key_id, roles=tuple(sorted(roles)))


def policy(files: dict[str, str], mode: str = "enforce", version: str = "2",
           at: datetime = T0) -> PolicyPublished:
    return PolicyPublished(signer="op", tenant="*", nonce=nonce(), issued_at=at, version=version,
                           mode=mode, policy_digest=PolicyBundle.from_files(files).digest,
                           files=files)


class Gov:
    """An engine in governance mode after a genesis: the operator ``op`` (admin, *), the
    authority, alice (requester, reader of acme), the runner (executor of acme), the example
    policies."""

    def __init__(self) -> None:
        self.operator = Principal("op", "*", OPERATOR.public_key, frozenset({"admin"}))
        self.engine = self.fresh()
        self.journal: list[tuple[Stream, bytes, datetime, Outcome]] = []
        for event, key in [
            (registration("op", "op", "*", OPERATOR, "admin"), OPERATOR),
            (registration("op", AUTH_ID, "*", AUTHORITY, "authority"), OPERATOR),
            (registration("op", "agent:alice", "acme", ALICE, "reader", "requester"), OPERATOR),
            (registration("op", "runner:1", "acme", RUNNER, "executor"), OPERATOR),
            (policy(example_files(), version="genesis"), OPERATOR),
        ]:
            assert self.govern(event, key).allow is True

    def fresh(self) -> Engine:
        return Engine(authority=AUTHORITY, authority_identity=AUTH_ID,
                      governance=GovernanceState(), compile_policy=PolicyBundle.from_files,
                      operator=self.operator, limiter=Unlimited(), limits=Limits())

    def handle(self, stream: Stream, raw: bytes, at: datetime = T0) -> Outcome:
        outcome = self.engine.handle(stream, raw, at)
        self.journal.append((stream, raw, at, outcome))
        return outcome

    def govern(self, event: Event, key: Signer, at: datetime = T0) -> Outcome:
        return self.handle(Stream.GOVERNANCE, sign_event(event, key), at)

    def ask(self, key: Signer = ALICE, at: datetime = T0, **kwargs: object) -> Outcome:
        kwargs.setdefault("nonce", nonce())
        event = request(issued_at=at, **kwargs)  # type: ignore[arg-type]
        return self.handle(Stream.REQUESTS, sign_event(event, key), at)


def answers(outcome: Outcome) -> list[Event]:
    events = []
    for output in outcome.outputs:
        stored = read_stored(output.value)
        assert stored is not None
        events.append(stored.model.model_validate_json(stored.payload))
    return events


def refusal(outcome: Outcome) -> Reason:
    denials = [e for e in answers(outcome) if isinstance(e, AuthorizationDenied)]
    assert outcome.allow is False and denials, answers(outcome)
    return denials[-1].reasons[0]


def grant_of(outcome: Outcome) -> AuthorizationGranted:
    (grant,) = answers(outcome)
    assert isinstance(grant, AuthorizationGranted), grant
    return grant


# -- genesis and live keys ---------------------------------------------------------------


def test_genesis_applies_every_event_and_counts_positions() -> None:
    gov = Gov()
    assert gov.engine.governance.position == 5
    assert gov.engine.policy.digest == PolicyBundle.from_files(example_files()).digest
    acks = [answers(o)[0] for *_, o in gov.journal]
    assert [a.position for a in acks if isinstance(a, GovernanceApplied)] == [1, 2, 3, 4, 5]


def test_an_empty_engine_takes_no_genesis_but_the_operators() -> None:
    engine = Gov().fresh()
    mallory = seeded_signer("mallory")
    raw = sign_event(registration("m", "m", "*", mallory, "admin"), mallory)
    outcome = engine.handle(Stream.GOVERNANCE, raw, T0)
    assert outcome.allow is False and outcome.reasons == (Reason.KEY_UNKNOWN,)
    assert engine.governance.position == 0


def test_a_key_registered_live_is_granted_from_the_next_request_on() -> None:
    gov = Gov()
    assert gov.ask(BOB, signer="agent:bob").reasons == (Reason.KEY_UNKNOWN,)
    applied = gov.govern(registration("op", "agent:bob", "acme", BOB, "reader", "requester"),
                         OPERATOR)
    (ack,) = answers(applied)
    assert isinstance(ack, GovernanceApplied) and ack.position == 6
    grant = grant_of(gov.ask(BOB, signer="agent:bob"))
    assert grant.governance == 6  # decided under the position that registered bob


def test_a_revoked_key_is_refused_at_once() -> None:
    gov = Gov()
    assert gov.govern(PrincipalRevoked(signer="op", tenant="acme", nonce=nonce(), issued_at=T0,
                                       key_id=ALICE.key_id), OPERATOR).allow is True
    assert gov.ask().reasons == (Reason.KEY_REVOKED,)


# -- who may govern ----------------------------------------------------------------------


def test_a_non_admin_cannot_govern() -> None:
    gov = Gov()
    outcome = gov.govern(TenantSuspended(signer="agent:alice", tenant="acme", nonce=nonce(),
                                         issued_at=T0), ALICE)
    assert refusal(outcome) is Reason.NOT_ADMIN
    assert gov.engine.governance.suspended_tenants == set()


def test_a_tenant_admin_governs_only_its_tenant() -> None:
    gov = Gov()
    gov.govern(registration("op", "acme:admin", "acme", ACME_ADMIN, "admin"), OPERATOR)
    gov.govern(registration("op", "beta:bot", "beta", BOB, "requester"), OPERATOR)
    foreign = gov.govern(PrincipalSuspended(signer="acme:admin", tenant="acme", nonce=nonce(),
                                            issued_at=T0, identity="beta:bot"), ACME_ADMIN)
    assert refusal(foreign) is Reason.TENANT_MISMATCH
    other_tenant = gov.govern(TenantSuspended(signer="acme:admin", tenant="beta",
                                              nonce=nonce(), issued_at=T0), ACME_ADMIN)
    assert refusal(other_tenant) is Reason.TENANT_MISMATCH  # the envelope's own check
    policy_event = gov.govern(policy(example_files()).model_copy(
        update={"signer": "acme:admin"}), ACME_ADMIN)
    assert refusal(policy_event) is Reason.TENANT_MISMATCH
    own = gov.govern(PrincipalSuspended(signer="acme:admin", tenant="acme", nonce=nonce(),
                                        issued_at=T0, identity="agent:alice"), ACME_ADMIN)
    assert own.allow is True


def test_the_last_operator_admin_cannot_be_revoked_or_suspended() -> None:
    gov = Gov()
    revoke = gov.govern(PrincipalRevoked(signer="op", tenant="*", nonce=nonce(), issued_at=T0,
                                         key_id=OPERATOR.key_id), OPERATOR)
    assert refusal(revoke) is Reason.LAST_ADMIN
    suspend = gov.govern(PrincipalSuspended(signer="op", tenant="*", nonce=nonce(),
                                            issued_at=T0, identity="op"), OPERATOR)
    assert refusal(suspend) is Reason.LAST_ADMIN


def test_the_authority_key_is_not_revoked_without_a_rotation() -> None:
    gov = Gov()
    revoke = PrincipalRevoked(signer="op", tenant="*", nonce=nonce(), issued_at=T0,
                              key_id=AUTHORITY.key_id)
    assert refusal(gov.govern(revoke, OPERATOR)) is Reason.AUTHORITY_ROTATION
    new_authority = seeded_signer("authority-2")
    gov.govern(registration("op", "govledger:authority-2", "*", new_authority, "authority"),
               OPERATOR)
    again = revoke.model_copy(update={"nonce": nonce()})
    # Another authority key is in force, but the processor still signs with this one.
    assert refusal(gov.govern(again, OPERATOR)) is Reason.AUTHORITY_ROTATION


def test_a_key_is_never_registered_twice() -> None:
    gov = Gov()
    twice = gov.govern(registration("op", "agent:alice2", "acme", ALICE, "requester"), OPERATOR)
    assert refusal(twice) is Reason.GOVERNANCE_CONFLICT


# -- replay, duplicates, order -------------------------------------------------------------


def test_a_redelivered_governance_event_changes_nothing() -> None:
    gov = Gov()
    raw = sign_event(TenantSuspended(signer="op", tenant="acme", nonce=nonce(), issued_at=T0),
                     OPERATOR)
    first = gov.handle(Stream.GOVERNANCE, raw)
    again = gov.handle(Stream.GOVERNANCE, raw)
    assert again.outputs == first.outputs and again.replayed
    assert gov.engine.governance.position == 6


def test_a_reused_nonce_or_a_stale_event_is_refused() -> None:
    gov = Gov()
    event = TenantSuspended(signer="op", tenant="acme", nonce=nonce(), issued_at=T0)
    gov.govern(event, OPERATOR)
    twin = TenantResumed(signer="op", tenant="acme", nonce=event.nonce, issued_at=T0)
    assert refusal(gov.govern(twin, OPERATOR)) is Reason.REPLAY
    stale = TenantResumed(signer="op", tenant="acme", nonce=nonce(),
                          issued_at=T0 - timedelta(hours=1))
    assert refusal(gov.govern(stale, OPERATOR)) is Reason.EXPIRED
    assert "acme" in gov.engine.governance.suspended_tenants


# -- the kill switch ------------------------------------------------------------------------


def executing(gov: Gov, grant: AuthorizationGranted, grant_id: str) -> Outcome:
    execution = ExecutionRequested(signer="runner:1", tenant="acme", nonce=nonce(),
                                   issued_at=T0, artifact_id=grant_id,
                                   root=grant.artifact.lineage.root, action="read",
                                   resource="db/orders/1", environment=ENV)
    return gov.handle(Stream.EXECUTIONS, sign_event(execution, RUNNER))


def test_a_tenant_suspension_denies_requests_and_refuses_outstanding_artifacts() -> None:
    gov = Gov()
    granted = gov.ask()
    grant = grant_of(granted)
    from ledger.core.envelope import event_id
    grant_id = event_id(read_stored(granted.outputs[0].value).payload)  # type: ignore[union-attr]
    gov.govern(TenantSuspended(signer="op", tenant="acme", nonce=nonce(), issued_at=T0),
               OPERATOR)
    assert gov.ask().reasons == (Reason.TENANT_SUSPENDED,)
    (verdict,) = answers(executing(gov, grant, grant_id))
    assert isinstance(verdict, ExecutionRefused)
    assert verdict.reasons == (Reason.TENANT_SUSPENDED,) and verdict.governance == 6
    gov.govern(TenantResumed(signer="op", tenant="acme", nonce=nonce(), issued_at=T0), OPERATOR)
    assert executing(gov, grant, grant_id).allow is True


def test_a_principal_suspension_refuses_every_artifact_below_it() -> None:
    gov = Gov()
    from ledger.core.envelope import event_id
    root = gov.ask(actions=("read",), resource="db/orders/*")
    root_id = event_id(read_stored(root.outputs[0].value).payload)  # type: ignore[union-attr]
    root_grant = grant_of(root)
    child = gov.ask(actions=("read",), resource="db/orders/1",
                    root=root_grant.artifact.lineage.root, parent=root_id)
    child_grant = grant_of(child)
    child_id = event_id(read_stored(child.outputs[0].value).payload)  # type: ignore[union-attr]
    gov.govern(PrincipalSuspended(signer="op", tenant="acme", nonce=nonce(), issued_at=T0,
                                  identity="agent:alice"), OPERATOR)
    assert executing(gov, child_grant, child_id).reasons == (Reason.PRINCIPAL_SUSPENDED,)
    gov.govern(PrincipalResumed(signer="op", tenant="acme", nonce=nonce(), issued_at=T0,
                                identity="agent:alice"), OPERATOR)
    assert executing(gov, child_grant, child_id).allow is True


# -- policies ------------------------------------------------------------------------------


PERMIT_ALL_READS = ('@id("read-anything")\npermit (principal, action == Action::"read", '
                    'resource);\n')


def test_a_published_policy_decides_the_next_request() -> None:
    gov = Gov()
    files = dict(example_files())
    assert gov.ask(resource="files/report").reasons == (Reason.POLICY_DENY,)
    files["extra.cedar"] = PERMIT_ALL_READS
    applied = gov.govern(policy(files), OPERATOR)
    assert answers(applied)[0].policy_digest == PolicyBundle.from_files(files).digest  # type: ignore[attr-defined]
    grant = grant_of(gov.ask(resource="files/report"))
    assert grant.artifact.policy_digest == PolicyBundle.from_files(files).digest
    assert "read-anything" in grant.artifact.policy_ids


def test_an_invalid_policy_is_refused_and_the_old_one_stays() -> None:
    gov = Gov()
    before = gov.engine.policy.digest
    files = dict(example_files())
    files["broken.cedar"] = 'permit (principal, action == Action::"nosuch", resource);'
    digest = "sha256:" + "1" * 64
    event = PolicyPublished(signer="op", tenant="*", nonce=nonce(), issued_at=T0, version="3",
                            policy_digest=digest, files=files)
    assert refusal(gov.govern(event, OPERATOR)) is Reason.POLICY_INVALID
    assert gov.engine.policy.digest == before
    assert grant_of(gov.ask()).artifact.policy_digest == before


def test_a_shadow_policy_is_promoted_by_a_second_event() -> None:
    gov = Gov()
    files = dict(example_files())
    files["extra.cedar"] = PERMIT_ALL_READS
    shadow = policy(files, mode="shadow")
    gov.govern(shadow, OPERATOR)
    (denied,) = answers(gov.ask(resource="files/report"))
    assert isinstance(denied, AuthorizationDenied) and denied.reasons == (Reason.POLICY_DENY,)
    assert denied.shadow is not None and denied.shadow.allow is True  # they disagree
    assert denied.shadow.policy_digest == shadow.policy_digest
    assert denied.shadow.policy_ids == ("read-anything",)
    agreed = grant_of(gov.ask(resource="db/orders/1"))
    assert agreed.shadow is not None and agreed.shadow.allow is True
    assert gov.ask(resource="prod/secrets/x").reasons == (Reason.POLICY_DENY,)
    gov.govern(PolicyPromoted(signer="op", tenant="*", nonce=nonce(), issued_at=T0,
                              policy_digest=shadow.policy_digest), OPERATOR)
    assert gov.ask(resource="files/report").allow is True
    assert grant_of(gov.ask(resource="db/orders/2")).shadow is None  # none left in shadow


# -- the two-person rule -------------------------------------------------------------------


def two_admins() -> Gov:
    gov = Gov()
    gov.govern(registration("op", "op2", "*", ADMIN2, "admin"), OPERATOR)
    gov.govern(GovernanceConfigured(signer="op", tenant="*", nonce=nonce(), issued_at=T0,
                                    quorum=2, window_s=600), OPERATOR)
    return gov


def approve(gov: Gov, governance_id: str, who: str, key: Signer,
            at: datetime = T0, tenant: str = "*") -> Outcome:
    return gov.govern(GovernanceApproved(signer=who, tenant=tenant, nonce=nonce(), issued_at=at,
                                         governance_id=governance_id), key, at)


def test_a_quorate_event_waits_for_a_second_admin() -> None:
    gov = two_admins()
    files = dict(example_files(), **{"extra.cedar": PERMIT_ALL_READS})
    proposed = gov.govern(policy(files), OPERATOR)
    assert proposed.allow is None and proposed.outputs == ()
    assert refusal(approve(gov, proposed.subject, "op", OPERATOR)) is Reason.APPROVAL_INVALID
    assert refusal(approve(gov, proposed.subject, "agent:alice", ALICE,
                                   tenant="acme")) is Reason.NOT_ADMIN
    done = approve(gov, proposed.subject, "op2", ADMIN2)
    (ack,) = answers(done)
    assert isinstance(ack, GovernanceApplied) and ack.request_id == proposed.subject
    assert ack.approvals == (done.subject,)
    assert gov.engine.policy.digest == PolicyBundle.from_files(files).digest


def test_a_quorate_event_below_quorum_at_its_deadline_is_refused() -> None:
    gov = two_admins()
    proposed = gov.govern(registration("op", "agent:bob", "acme", BOB, "requester"), OPERATOR)
    late = T0 + timedelta(minutes=11)
    outcome = approve(gov, proposed.subject, "op2", ADMIN2, at=late)
    reasons = {e.request_id: e.reasons[0] for e in answers(outcome)
               if isinstance(e, AuthorizationDenied)}
    assert reasons == {proposed.subject: Reason.QUORUM_EXPIRED,
                       outcome.subject: Reason.APPROVAL_INVALID}
    assert BOB.key_id not in gov.engine.keyring


# -- restore ---------------------------------------------------------------------------------


def test_restore_decides_the_journal_again_to_the_same_state() -> None:
    gov = two_admins()
    proposed = gov.govern(registration("op", "agent:bob", "acme", BOB, "requester"), OPERATOR)
    gov.govern(TenantSuspended(signer="op", tenant="beta", nonce=nonce(), issued_at=T0),
               OPERATOR)
    fresh = gov.fresh()
    for stream, raw, at, outcome in gov.journal:
        fresh.restore(stream, raw, at, outcome)
    state, live = fresh.governance, gov.engine.governance
    assert (state.position, state.suspended_tenants, state.quorum) == (
        live.position, live.suspended_tenants, live.quorum)
    assert proposed.subject in state.pending
    assert fresh.policy.digest == gov.engine.policy.digest


def test_restore_refuses_a_journal_whose_answer_was_altered() -> None:
    gov = Gov()
    stream, raw, at, outcome = gov.journal[2]
    forged_at = at + timedelta(seconds=1)  # decided again at another time: other bytes
    fresh = gov.fresh()
    for entry in gov.journal[:2]:
        fresh.restore(entry[0], entry[1], entry[2], entry[3])
    with pytest.raises(Unavailable, match="other answers"):
        fresh.restore(stream, raw, forged_at, outcome)
