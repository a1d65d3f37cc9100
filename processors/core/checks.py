"""The ordered, fail-closed checks (DESIGN.md section 3) after the envelope verified.

``ledger.core.envelope.verify_envelope`` has already run the first checks (MALFORMED,
NON_CANONICAL, OVERSIZED, UNSUPPORTED_VERSION, SIGNATURE_*, KEY_*, IDENTITY_MISMATCH,
TENANT_MISMATCH). The functions here continue, in this order, and the first failure denies:

requests:    TENANT_SUSPENDED / PRINCIPAL_SUSPENDED (the signer, the holder, or the initiator
             or holder of any artifact above the parent) -> POLICY_DENY (no requester role)
             -> REPLAY -> IDENTITY_MISMATCH (holder not of the tenant) -> EXPIRED /
             NOT_YET_VALID / TTL_TOO_LONG -> PARENT_UNKNOWN -> IDENTITY_MISMATCH (only the
             parent's holder delegates) -> PARENT_REVOKED / PARENT_EXPIRED -> ENV_MISMATCH ->
             SCOPE_WIDENING / DEPTH_EXCEEDED / LINEAGE_CYCLE -> POLICY_DENY -> RATE_LIMITED
executions:  REPLAY -> ARTIFACT_INVALID -> TENANT_SUSPENDED / PRINCIPAL_SUSPENDED (the
             runtime, or the initiator or holder of the artifact or any artifact above it:
             the kill switch) -> IDENTITY_MISMATCH -> ARTIFACT_REVOKED ->
             EXPIRED / NOT_YET_VALID -> then the artifact rule shared with the gate
             (``ledger.core.artifact.artifact_refusal``: window, SCOPE_MISMATCH,
             ENV_MISMATCH) -> ARTIFACT_CONSUMED
revocations: ARTIFACT_INVALID -> POLICY_DENY (the signer may not revoke it)

An artifact of another tenant than the signer's (tenant ``*`` excepted) is, for executions
and revocations, exactly an unknown artifact: ARTIFACT_INVALID with the same detail, so a
denial never tells another tenant that an artifact id exists (issue 19).

Time rules (``now`` is the processor's arrival clock, never the client's claim):

* ``issued_at`` later than ``now + max_clock_skew`` is NOT_YET_VALID; earlier than
  ``now - max_request_age`` is EXPIRED;
* a requested window is ``[not_before, not_after)``; ``not_after <= now`` is EXPIRED;
  ``not_after - not_before > max_ttl`` is TTL_TOO_LONG; ``not_before`` more than
  ``max_ttl`` ahead is NOT_YET_VALID;
* an artifact is usable for ``not_before <= now < not_after``.

A denial is data, never an exception that escapes: any error inside a check, the policy engine
included, is a denial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from ledger.core.artifact import WINDOW_REASONS, artifact_refusal
from ledger.core.envelope import VerifiedEvent
from ledger.core.events import AuthorizationRequested, AuthorizationRevoked
from ledger.core.execution_events import ExecutionRequested
from ledger.core.governance import GovernanceState
from ledger.core.keys import KeyRing, Principal
from ledger.core.scope import normalise_resource
from ledger.errors import Reason, Rejected
from processors.core.freshness import Limits, ReplayMemory, check_time
from processors.core.lineage import GrantRecord, LineageState


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the checks. ``reasons`` is empty only when ``allow`` is True."""

    allow: bool
    reasons: tuple[Reason, ...] = ()
    detail: str = ""
    policy_ids: tuple[str, ...] = ()
    shadow: Verdict | None = None  # the shadow policy's verdict, where the policy was asked

    @classmethod
    def deny(cls, reason: Reason, detail: str = "",
             policy_ids: tuple[str, ...] = ()) -> Verdict:
        return cls(False, (reason,), detail[:512], policy_ids)


ALLOW = Verdict(True)


class PolicyResult(Protocol):
    @property
    def allow(self) -> bool: ...
    @property
    def determining(self) -> tuple[str, ...]: ...
    @property
    def errors(self) -> tuple[str, ...]: ...


class PolicyEngine(Protocol):
    """What the checks need of processors.policy.PolicyBundle."""

    @property
    def digest(self) -> str: ...

    def evaluate(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object]) -> PolicyResult: ...


class RateLimiter(Protocol):
    def allow(self, identity: str, now: float) -> bool: ...


def evaluate_policy(policy: PolicyEngine, request: AuthorizationRequested,
                    roles: frozenset[str], depth: int) -> Verdict:
    """Every requested action must be permitted; no permit, a forbid or any error denies."""
    return _evaluate_policy(policy, request, roles, depth)[0]


@dataclass(slots=True)
class PolicyMemo:
    """:func:`evaluate_policy` remembered for one policy: the same inputs, the same verdict.

    Cedar is deterministic: the same policy set and the same request give the same answer. The
    key holds everything :func:`evaluate_policy` passes to the policy engine (signer, tenant,
    actions, resource, environments, depth, roles, single_use, and the request context with
    each value's type, so ``true`` and ``1`` differ); all are validated model fields of fixed
    types. Only clean answers are remembered: a verdict that involved any policy error or
    engine exception is recomputed next time. Bounded: the oldest entry goes first. Measured
    ~250 us per Cedar evaluation versus ~5 us per hit (docs/performance.md).
    """

    policy: PolicyEngine
    max_entries: int = 65_536
    entries: dict[tuple[object, ...], Verdict] = field(default_factory=dict)

    def verdict(self, request: AuthorizationRequested, roles: frozenset[str],
                depth: int) -> Verdict:
        key = (request.signer, request.tenant, request.scope.actions, request.scope.resource,
               request.environments, depth, roles, request.single_use,
               tuple((k, type(v), v) for k, v in request.context.items()))
        found = self.entries.get(key)
        if found is not None:
            return found
        verdict, clean = _evaluate_policy(self.policy, request, roles, depth)
        if clean:
            if len(self.entries) >= self.max_entries:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = verdict
        return verdict


def _evaluate_policy(policy: PolicyEngine, request: AuthorizationRequested,
                     roles: frozenset[str], depth: int) -> tuple[Verdict, bool]:
    """The verdict, and whether it came without any policy error or engine exception."""
    context: dict[str, object] = {
        "tenant": request.tenant, "environments": list(request.environments),
        "depth": depth, "roles": sorted(roles), "single_use": request.single_use,
        "meta": dict(request.context),
    }
    determining: list[str] = []
    for action in request.scope.actions:
        try:
            result = policy.evaluate(request.signer, action, request.scope.resource, context)
            allow, ids, errors = result.allow, result.determining, result.errors
        except Exception as exc:  # any engine failure is a denial, never an escape
            return Verdict.deny(Reason.POLICY_DENY, f"policy error: {type(exc).__name__}"), False
        if errors:
            return Verdict.deny(Reason.POLICY_DENY, f"policy error on {action}: {errors[0]}",
                                tuple(ids)), False
        if not allow:
            return Verdict.deny(Reason.POLICY_DENY, f"{action} not permitted", tuple(ids)), True
        determining.extend(i for i in ids if i not in determining)
    return Verdict(True, (), "", tuple(sorted(determining))), True


def check_request_principal(request: AuthorizationRequested,
                            roles: frozenset[str]) -> Verdict | None:
    """The request checks that need neither state nor a clock, in :func:`decide_request`'s
    order: the signer holds the ``requester`` role; the resource pattern is valid."""
    if "requester" not in roles:
        return Verdict.deny(Reason.POLICY_DENY, f"{request.signer} has no requester role")
    try:
        normalise_resource(request.scope.resource)
    except Rejected as exc:
        return Verdict.deny(exc.reason, exc.detail)
    return None


def decide_by_policy(policy: PolicyEngine, request: AuthorizationRequested,
                     roles: frozenset[str], depth: int) -> Verdict:
    """What :func:`decide_request` answers for a request that passes every check needing
    state or a clock (replay, holder, time window, lineage, rate limit): the principal
    checks, then the policy. The offline policy tools (``govledger policy test|explain``)
    run exactly this, so they and the processor share one rule. Never raises."""
    if (refused := check_request_principal(request, roles)) is not None:
        return refused
    return evaluate_policy(policy, request, roles, depth)


def _same_tenant_principal(keyring: KeyRing | None, identity: str, tenant: str) -> bool:
    if keyring is None:
        return False
    return any(p.identity == identity and p.tenant in ("*", tenant)
               for p in keyring.principals())


def suspended(governance: GovernanceState | None, lineage: LineageState, tenant: str,
              artifact_id: str | None, *identities: str) -> Verdict | None:
    """The kill switch: a denial if ``tenant``, one of ``identities``, or the initiator or
    holder of ``artifact_id`` or of any artifact above it is suspended (governance)."""
    if governance is None or not (governance.suspended_tenants
                                  or governance.suspended_principals):
        return None
    above: list[str] = []
    if artifact_id is not None and artifact_id in lineage.grants:
        try:
            above = [who for r in lineage.ancestors(artifact_id)
                     for who in (r.artifact.initiator, r.artifact.holder)]
        except ValueError:
            return Verdict.deny(Reason.LINEAGE_CYCLE)
    if (reason := governance.suspension(tenant, *identities, *above)) is not None:
        return Verdict.deny(reason, "suspended by governance")
    return None


def decide_request(verified: VerifiedEvent, lineage: LineageState, replay: ReplayMemory,
                   policy: PolicyEngine | PolicyMemo, limiter: RateLimiter, now: datetime,
                   limits: Limits, keyring: KeyRing | None = None,
                   governance: GovernanceState | None = None,
                   shadow: PolicyMemo | None = None) -> Verdict:
    """Run the request checks in their documented order; the first failure denies.

    ``policy`` may be a :class:`PolicyMemo` over the policy engine: the same verdicts, sooner.
    """
    request = verified.event
    if not isinstance(request, AuthorizationRequested):
        return Verdict.deny(Reason.MALFORMED, f"{verified.kind} is not a request")
    # A verified request spends its nonce whatever the verdict (the first request to use it
    # keeps it), so the replay memory depends only on which requests arrived: a restart that
    # restores it from the journal needs no verdict details to rebuild it exactly.
    replayed = replay.is_replay(request.signer, request.nonce, verified.event_id, now)
    replay.remember(request.signer, request.nonce, verified.event_id,
                    limits.nonce_until(request.issued_at, now), now)
    if (denied := suspended(governance, lineage, request.tenant, request.lineage.parent,
                            request.signer, request.holder_identity)) is not None:
        return denied
    if (refused := check_request_principal(request, verified.principal.roles)) is not None:
        return refused
    if replayed:
        return Verdict.deny(Reason.REPLAY, "nonce already used by another request")
    if request.holder is not None and not _same_tenant_principal(keyring, request.holder,
                                                                 request.tenant):
        return Verdict.deny(Reason.IDENTITY_MISMATCH, "holder is not a principal of the tenant")
    window = request.window
    if (reason := check_time(request.issued_at, window.not_before, window.not_after, now,
                             limits)) is not None:
        return Verdict.deny(reason)
    if (reason := lineage.check_child(request, now, limits.max_depth)) is not None:
        return Verdict.deny(reason)
    depth = lineage.depth_of_child(request.lineage.parent)
    roles = verified.principal.roles
    verdict = (policy.verdict(request, roles, depth) if isinstance(policy, PolicyMemo)
               else evaluate_policy(policy, request, roles, depth))
    if shadow is not None:  # evaluated beside, never deciding (shadow mode)
        verdict = replace(verdict, shadow=shadow.verdict(request, roles, depth))
    if not verdict.allow:
        return verdict
    if not limiter.allow(request.signer, now.timestamp()):
        return replace(Verdict.deny(Reason.RATE_LIMITED, policy_ids=verdict.policy_ids),
                       shadow=verdict.shadow)
    return verdict


NO_SUCH_ARTIFACT = Verdict.deny(Reason.ARTIFACT_INVALID, "no such artifact in this lineage")


def _known_to(principal: Principal, lineage: LineageState, artifact_id: str,
              root: str) -> GrantRecord | None:
    """The artifact's record if it exists in lineage ``root`` *as far as ``principal`` may
    know*: another tenant's artifact is answered as an unknown one (module docstring)."""
    record = lineage.grants.get(artifact_id)
    if record is None or record.artifact.lineage.root != root:
        return None
    return record if principal.tenant in ("*", record.artifact.tenant) else None


def decide_execution(verified: VerifiedEvent, lineage: LineageState, replay: ReplayMemory,
                     now: datetime, limits: Limits,
                     governance: GovernanceState | None = None) -> Verdict:
    """Run the execution checks in their documented order (module docstring)."""
    execution = verified.event
    if not isinstance(execution, ExecutionRequested):
        return Verdict.deny(Reason.MALFORMED, f"{verified.kind} is not an execution request")
    if replay.is_replay(execution.signer, execution.nonce, verified.event_id, now):
        return Verdict.deny(Reason.REPLAY, "nonce already used by another execution request")
    replay.remember(execution.signer, execution.nonce, verified.event_id,
                    limits.nonce_until(execution.issued_at, now), now)
    runtime = verified.principal
    record = _known_to(runtime, lineage, execution.artifact_id, execution.root)
    if record is None:
        return NO_SUCH_ARTIFACT
    art = record.artifact
    if (denied := suspended(governance, lineage, art.tenant, execution.artifact_id,
                            execution.signer)) is not None:
        return denied
    if art.tenant != execution.tenant or (
            execution.signer != art.holder and "executor" not in runtime.roles):
        return Verdict.deny(Reason.IDENTITY_MISMATCH, "runtime identity may not use it")
    try:
        if (revoked := lineage.revoked_ancestor(execution.artifact_id)) is not None:
            return Verdict.deny(Reason.ARTIFACT_REVOKED, f"revoked at {revoked[:16]}")
    except ValueError:
        return Verdict.deny(Reason.LINEAGE_CYCLE)
    if (reason := check_time(execution.issued_at, art.window.not_before,
                             art.window.not_after, now, limits)) is not None:
        return Verdict.deny(reason)
    refused = artifact_refusal(art, now, action=execution.action, resource=execution.resource,
                               environment=execution.environment)
    if refused is not None:  # NOT_YET_VALID, SCOPE_MISMATCH, ENV_MISMATCH (EXPIRED: above)
        # A time reason is signed without a detail, as check_time's.
        detail = "" if refused.reason in WINDOW_REASONS else refused.detail
        return Verdict.deny(refused.reason, detail)
    if art.single_use and record.uses > 0:
        return Verdict.deny(Reason.ARTIFACT_CONSUMED, "single-use artifact already used")
    return ALLOW


def decide_revocation(verified: VerifiedEvent, lineage: LineageState) -> Verdict:
    """A revocation is honoured from the artifact's holder, the holder of any ancestor, or a
    principal with the ``revoker`` role in the artifact's tenant (or tenant ``*``)."""
    revocation = verified.event
    if not isinstance(revocation, AuthorizationRevoked):
        return Verdict.deny(Reason.MALFORMED, f"{verified.kind} is not a revocation")
    principal = verified.principal
    record = _known_to(principal, lineage, revocation.artifact_id, revocation.root)
    if record is None:
        return NO_SUCH_ARTIFACT
    if "revoker" in principal.roles and principal.tenant in ("*", record.artifact.tenant):
        return ALLOW
    try:
        holders = {who for r in lineage.ancestors(revocation.artifact_id)
                   for who in (r.artifact.initiator, r.artifact.holder)}
    except ValueError:
        return Verdict.deny(Reason.LINEAGE_CYCLE)
    if revocation.signer in holders and revocation.tenant == record.artifact.tenant:
        return ALLOW
    return Verdict.deny(Reason.POLICY_DENY, f"{revocation.signer} may not revoke this artifact")
