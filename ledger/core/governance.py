"""Governance state: the fold of applied governance events. Pure: time is an argument.

Who may govern: a principal with the ``admin`` role, for its own tenant (``*``: the operator,
for every tenant). The rules, in the order :func:`decide` applies them (the first failure
refuses the event with its reason code, and the refusal is ledgered like a denial):

1. the signer is an admin (NOT_ADMIN); tenant-wide kinds (policies, the rules themselves)
   are the operator's (TENANT_MISMATCH);
2. the (signer, nonce) was never used by another governance event (REPLAY); ``issued_at``
   is within the request age and clock skew of arrival (EXPIRED / NOT_YET_VALID);
3. the kind's own rule: a registration of a new, strong key (GOVERNANCE_CONFLICT,
   KEY_WEAK); authority and ledger roles only by the operator; a revocation, suspension or
   resumption of a principal of the event's tenant (TENANT_MISMATCH) that exists and is in
   the right state (GOVERNANCE_CONFLICT); never leaving no operator admin in force
   (LAST_ADMIN) or revoking an authority key without another in force, or the key the
   processor signs with (AUTHORITY_ROTATION); a policy that validates against its schema
   and whose digest is its files' (POLICY_INVALID);
4. quorate kinds (governance_events.QUORATE_TYPES) wait until ``quorum`` distinct admins
   (the proposer included) signed, by the deadline; an approval by a non-admin, the
   proposer, twice by one admin, for another tenant, for nothing pending or after the
   deadline is refused (APPROVAL_INVALID); a pending event past its deadline is refused
   (QUORUM_EXPIRED) at the next governance event the processor decides.

Every applied event moves the *position* by one; decisions name the position they were
decided under. :class:`GovernanceState` is mutable (its :class:`KeyRing` is shared by
reference with whoever verifies envelopes) and only this module changes it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.core.envelope import VerifiedEvent
from ledger.core.events import Event
from ledger.core.governance_events import (
    QUORATE_TYPES,
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
from ledger.core.keys import KeyRing, Principal, check_public_key, key_id
from ledger.errors import Reason, Rejected

ADMIN = "admin"
OPERATOR_TENANT = "*"
DEFAULT_WINDOW = timedelta(hours=1)
MAX_PENDING = 1024

PolicyCheck = Callable[[Mapping[str, str]], str]
"""Validates a policy set (files) and returns its digest; raises Rejected(POLICY_INVALID)."""


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """A published policy set: its digest, version, files and the event that published it."""

    digest: str
    version: str
    files: Mapping[str, str]
    event_id: str


@dataclass(slots=True)
class Pending:
    """A quorate event waiting for approvals: admin identity -> approval event id."""

    verified: VerifiedEvent
    deadline: datetime
    approvals: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Applied:
    """One governance event put in force at ``position``."""

    event_id: str
    kind: str
    position: int
    tenant: str
    approvals: tuple[str, ...] = ()
    policy_digest: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    event_id: str
    tenant: str
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    """What deciding one governance input did: events applied and refused (an approval can
    apply the event it approves; any input can expire pending ones), or only pending."""

    applied: tuple[Applied, ...] = ()
    refused: tuple[Refused, ...] = ()


@dataclass(slots=True)
class GovernanceState:
    """Who may sign what, which policy is in force, who is suspended, and the position."""

    keyring: KeyRing = field(default_factory=KeyRing)
    position: int = 0
    last_event: str | None = None
    policy: PolicyRecord | None = None
    shadow: PolicyRecord | None = None
    suspended_principals: set[tuple[str, str]] = field(default_factory=set)
    suspended_tenants: set[str] = field(default_factory=set)
    quorum: int = 1
    window: timedelta = DEFAULT_WINDOW
    pending: dict[str, Pending] = field(default_factory=dict)
    nonces: set[tuple[str, str]] = field(default_factory=set)
    authority_key: str | None = None  # the key the processor signs with (never revocable)

    # -- questions the checks ask ---------------------------------------------------------

    def suspension(self, tenant: str, *identities: str) -> Reason | None:
        """TENANT_SUSPENDED or PRINCIPAL_SUSPENDED if ``tenant`` or one of ``identities``
        (of that tenant) is suspended, else None."""
        if tenant in self.suspended_tenants:
            return Reason.TENANT_SUSPENDED
        if any((tenant, who) in self.suspended_principals for who in identities):
            return Reason.PRINCIPAL_SUSPENDED
        return None

    def admins(self, tenant: str, now: datetime | None) -> list[Principal]:
        """The admin keys in force for ``tenant`` (exactly that tenant), not suspended."""
        return [p for p in self.keyring.principals()
                if ADMIN in p.roles and p.tenant == tenant and _in_force(p, now)
                and (p.tenant, p.identity) not in self.suspended_principals]


def _in_force(principal: Principal, now: datetime | None) -> bool:
    if principal.revoked_at is not None and (now is None or now >= principal.revoked_at):
        return False
    return now is None or principal.not_after is None or now < principal.not_after


def bootstrap(state: GovernanceState, verified: VerifiedEvent) -> Applied:
    """Apply the genesis event: a PrincipalRegistered of an operator admin, signed by the key
    it registers (the trust anchor of the whole history). Only on an empty state. The caller
    verified the signature under that key. Raises Rejected."""
    event = verified.event
    if state.position or len(state.keyring):
        raise Rejected(Reason.GOVERNANCE_CONFLICT, "genesis only on an empty governance state")
    if not (isinstance(event, PrincipalRegistered) and ADMIN in event.roles
            and event.tenant == OPERATOR_TENANT and event.key_id == verified.key_id):
        raise Rejected(Reason.NOT_ADMIN, "genesis is an operator admin registering itself")
    _register(state, event)
    state.nonces.add((event.signer, event.nonce))
    return _advance(state, verified, ())


def follow(state: GovernanceState, verified: VerifiedEvent, position: int,
           at: datetime) -> Applied:
    """Apply a governance event the authority applied (its GovernanceApplied names it, its
    ``position`` and, as ``issued_at``, the arrival time ``at`` it was applied at), without
    deciding it again: how the sequencer, the API and an offline reader follow the
    processor. Raises Rejected(GOVERNANCE_CONFLICT) unless ``position`` is the next one."""
    if position != state.position + 1:
        raise Rejected(Reason.GOVERNANCE_CONFLICT, f"governance position {position} after "
                       f"{state.position}")
    state.nonces.add((verified.event.signer, verified.event.nonce))
    state.pending.pop(verified.event_id, None)
    return _apply(state, verified, (), at)


def decide(state: GovernanceState, verified: VerifiedEvent, now: datetime, *,
           check_policy: PolicyCheck, max_age: timedelta, max_skew: timedelta) -> Result:
    """Decide one verified governance event received at ``now`` (module docstring) and apply
    it to ``state`` if it passes. Never raises Rejected: a refusal is data."""
    expired = _expire(state, now)
    try:
        result = _decide(state, verified, now, check_policy, max_age, max_skew)
    except Rejected as exc:
        result = Result(refused=(Refused(verified.event_id, verified.event.tenant, exc.reason,
                                         exc.detail[:512]),))
    return Result(result.applied, expired + result.refused)


def _decide(state: GovernanceState, verified: VerifiedEvent, now: datetime,
            check_policy: PolicyCheck, max_age: timedelta, max_skew: timedelta) -> Result:
    event = verified.event
    if ADMIN not in verified.principal.roles:
        raise Rejected(Reason.NOT_ADMIN, f"{event.signer} has no admin role")
    if (event.signer, event.nonce) in state.nonces:
        raise Rejected(Reason.REPLAY, "nonce already used by another governance event")
    state.nonces.add((event.signer, event.nonce))
    if event.issued_at > now + max_skew:
        raise Rejected(Reason.NOT_YET_VALID)
    if event.issued_at < now - max_age:
        raise Rejected(Reason.EXPIRED)
    if isinstance(event, GovernanceApproved):
        return _approve(state, verified, now, check_policy)
    _check(state, event, verified.principal, now, check_policy)
    if isinstance(event, QUORATE_TYPES) and state.quorum > 1:
        if len(state.pending) >= MAX_PENDING:
            raise Rejected(Reason.GOVERNANCE_CONFLICT, "too many governance events pending")
        deadline = min(event.deadline or now + state.window, now + state.window)
        state.pending[verified.event_id] = Pending(verified, deadline,
                                                   {event.signer: verified.event_id})
        return Result()
    return Result(applied=(_apply(state, verified, (), now),))


def _approve(state: GovernanceState, verified: VerifiedEvent, now: datetime,
             check_policy: PolicyCheck) -> Result:
    approval = verified.event
    assert isinstance(approval, GovernanceApproved)
    pending = state.pending.get(approval.governance_id)
    if pending is None:
        raise Rejected(Reason.APPROVAL_INVALID, "no such governance event pending")
    proposed = pending.verified.event
    if approval.tenant not in (OPERATOR_TENANT, proposed.tenant):
        raise Rejected(Reason.APPROVAL_INVALID, "an admin of another tenant")
    if approval.signer in pending.approvals:
        raise Rejected(Reason.APPROVAL_INVALID, f"{approval.signer} already signed it")
    pending.approvals[approval.signer] = verified.event_id
    if len(pending.approvals) < state.quorum:
        return Result()
    del state.pending[approval.governance_id]
    approvals = tuple(sorted(a for who, a in pending.approvals.items()
                             if a != pending.verified.event_id))
    try:  # the state may have moved since it was proposed: check it again
        _check(state, proposed, pending.verified.principal, now, check_policy)
    except Rejected as exc:
        return Result(refused=(Refused(pending.verified.event_id, proposed.tenant, exc.reason,
                                       exc.detail),))
    return Result(applied=(_apply(state, pending.verified, approvals, now),))


def _expire(state: GovernanceState, now: datetime) -> tuple[Refused, ...]:
    gone = [(eid, p.verified.event.tenant) for eid, p in state.pending.items()
            if now >= p.deadline]
    for eid, _ in gone:
        del state.pending[eid]
    return tuple(Refused(eid, tenant, Reason.QUORUM_EXPIRED, f"quorum of {state.quorum} not "
                         "reached by the deadline") for eid, tenant in gone)


def _check(state: GovernanceState, event: Event, signer: Principal, now: datetime,
           check_policy: PolicyCheck) -> None:
    """Step 3 of the module docstring for one event. Raises Rejected."""
    tenant_wide = isinstance(event, PolicyPublished | PolicyPromoted | GovernanceConfigured)
    if tenant_wide and (event.tenant != OPERATOR_TENANT or signer.tenant != OPERATOR_TENANT):
        raise Rejected(Reason.TENANT_MISMATCH, f"{event.KIND} is the operator's")
    if isinstance(event, PrincipalRegistered):
        _check_registration(state, event)
    elif isinstance(event, PrincipalRevoked):
        _check_revocation(state, event, now)
    elif isinstance(event, PrincipalSuspended | PrincipalResumed):
        target = _principal_named(state, event.identity, event.tenant)
        suspended = (target.tenant, target.identity) in state.suspended_principals
        if suspended == isinstance(event, PrincipalSuspended):
            raise Rejected(Reason.GOVERNANCE_CONFLICT, f"{event.identity} is "
                           f"{'already' if suspended else 'not'} suspended")
        if isinstance(event, PrincipalSuspended):
            if target.roles & {"authority", "ledger"}:
                raise Rejected(Reason.AUTHORITY_ROTATION, "the authority is not suspended: "
                               "rotate its key")
            _keep_an_operator(state, now, suspended=(target.tenant, target.identity))
    elif isinstance(event, TenantSuspended | TenantResumed):
        if event.tenant == OPERATOR_TENANT:
            raise Rejected(Reason.GOVERNANCE_CONFLICT, "suspend a tenant by name, not *")
        if (event.tenant in state.suspended_tenants) == isinstance(event, TenantSuspended):
            raise Rejected(Reason.GOVERNANCE_CONFLICT, f"tenant {event.tenant} is already "
                           f"{'suspended' if isinstance(event, TenantSuspended) else 'active'}")
    elif isinstance(event, PolicyPublished):
        digest = check_policy(event.files)
        if digest != event.policy_digest:
            raise Rejected(Reason.POLICY_INVALID, f"files digest {digest}, event says "
                           f"{event.policy_digest}")
    elif isinstance(event, PolicyPromoted):
        if state.shadow is None or state.shadow.digest != event.policy_digest:
            raise Rejected(Reason.GOVERNANCE_CONFLICT, "no such shadow policy to promote")
    elif (isinstance(event, GovernanceConfigured)
          and event.quorum > len({p.identity for p in state.admins(OPERATOR_TENANT, now)})):
        raise Rejected(Reason.GOVERNANCE_CONFLICT, f"quorum {event.quorum} is more "
                           "than the operator admins in force")


def _check_registration(state: GovernanceState, event: PrincipalRegistered) -> None:
    try:
        public_key = base64.b64decode(event.public_key, validate=True)
    except binascii.Error as exc:
        raise Rejected(Reason.MALFORMED, "public_key is not base64") from exc
    check_public_key(public_key)
    if key_id(public_key) != event.key_id:
        raise Rejected(Reason.MALFORMED, "key_id is not the public key's")
    if event.key_id in state.keyring:
        raise Rejected(Reason.GOVERNANCE_CONFLICT, "key already registered (keys are never "
                       "registered twice, even after a revocation)")
    if {"authority", "ledger"} & set(event.roles) and event.tenant != OPERATOR_TENANT:
        raise Rejected(Reason.TENANT_MISMATCH, "authority and ledger keys are the operator's")


def _check_revocation(state: GovernanceState, event: PrincipalRevoked, now: datetime) -> None:
    if event.key_id not in state.keyring:
        raise Rejected(Reason.GOVERNANCE_CONFLICT, "no such key")
    target = state.keyring.get(event.key_id)
    if event.tenant not in (OPERATOR_TENANT, target.tenant):
        raise Rejected(Reason.TENANT_MISMATCH, "a key of another tenant")
    if not _in_force(target, now):
        raise Rejected(Reason.GOVERNANCE_CONFLICT, "key already revoked or expired")
    if "authority" in target.roles:
        if event.key_id == state.authority_key:
            raise Rejected(Reason.AUTHORITY_ROTATION, "the processor signs with this key: "
                           "start it with the new authority key first")
        others = [p for p in state.keyring.with_role("authority")
                  if p.key_id != event.key_id and _in_force(p, now)]
        if not others:
            raise Rejected(Reason.AUTHORITY_ROTATION, "no other authority key in force")
    _keep_an_operator(state, now, revoked=event.key_id)


def _keep_an_operator(state: GovernanceState, now: datetime, *, revoked: str | None = None,
                      suspended: tuple[str, str] | None = None) -> None:
    """Raise Rejected(LAST_ADMIN) if the change leaves no operator admin in force."""
    left = [p for p in state.admins(OPERATOR_TENANT, now)
            if p.key_id != revoked and (p.tenant, p.identity) != suspended]
    if not left:
        raise Rejected(Reason.LAST_ADMIN, "it would leave no operator admin in force")


def _principal_named(state: GovernanceState, identity: str, tenant: str) -> Principal:
    found = [p for p in state.keyring.principals() if p.identity == identity
             and (tenant == OPERATOR_TENANT or p.tenant == tenant)]
    if not found:
        raise Rejected(Reason.GOVERNANCE_CONFLICT if tenant == OPERATOR_TENANT
                       else Reason.TENANT_MISMATCH, f"no principal {identity} in {tenant}")
    return found[0]


def _apply(state: GovernanceState, verified: VerifiedEvent, approvals: tuple[str, ...],
           now: datetime) -> Applied:
    """Put a checked event in force and advance the position."""
    event = verified.event
    if isinstance(event, PrincipalRegistered):
        _register(state, event)
    elif isinstance(event, PrincipalRevoked):
        state.keyring.revoke(state.keyring.get(event.key_id).key_id, now)
    elif isinstance(event, PrincipalSuspended | PrincipalResumed):
        target = _principal_named(state, event.identity, event.tenant)
        (state.suspended_principals.add if isinstance(event, PrincipalSuspended)
         else state.suspended_principals.discard)((target.tenant, target.identity))
    elif isinstance(event, TenantSuspended):
        state.suspended_tenants.add(event.tenant)
    elif isinstance(event, TenantResumed):
        state.suspended_tenants.discard(event.tenant)
    elif isinstance(event, PolicyPublished):
        record = PolicyRecord(event.policy_digest, event.version, dict(event.files),
                              verified.event_id)
        if event.mode == "shadow":
            state.shadow = record
        else:
            state.policy = record
    elif isinstance(event, PolicyPromoted):
        state.policy, state.shadow = state.shadow, None
    elif isinstance(event, GovernanceConfigured):
        state.quorum, state.window = event.quorum, timedelta(seconds=event.window_s)
    return _advance(state, verified, approvals)


def _register(state: GovernanceState, event: PrincipalRegistered) -> None:
    state.keyring.add(Principal(event.identity, event.tenant,
                                base64.b64decode(event.public_key), frozenset(event.roles),
                                event.not_before, event.not_after))


def _advance(state: GovernanceState, verified: VerifiedEvent,
             approvals: tuple[str, ...]) -> Applied:
    state.position += 1
    state.last_event = verified.event_id
    event = verified.event
    digest = event.policy_digest if isinstance(event, PolicyPublished | PolicyPromoted) else None
    return Applied(verified.event_id, event.KIND, state.position, event.tenant, approvals,
                   digest)
