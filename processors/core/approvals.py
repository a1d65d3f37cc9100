"""Human approval, the pure rules (docs/approvals.md): which requests wait, who may approve,
when the quorum grants and what ends a pending request. No I/O; time is an argument.

A permit policy annotated ``@approval("role=R,k=K,ttl=S")`` (read at policy load,
processors/policy.py) makes every request it determines wait: the engine answers it with a
signed ``ApprovalRequired`` (:meth:`Approvals.require`) and keeps it *pending* here: request
id -> the artifact a quorum would grant, the role, ``k``, the deadline, the approvers so far.

An approval (``ApprovalGiven`` / ``ApprovalRefused``, :meth:`Approvals.answer`) counts only if
it names a pending request (NOT_PENDING; APPROVAL_EXPIRED once the request expired), of its
own tenant (TENANT_MISMATCH), signed by a principal holding the role (NOT_APPROVER) who is
neither the requester nor the holder (SELF_APPROVAL), once per approver (APPROVAL_DUPLICATE),
issued within the request age (EXPIRED / NOT_YET_VALID). An approval that cannot count is
refused with a signed ``AuthorizationDenied`` naming the approval's id. The k-th approval
gets the request's ``AuthorizationGranted``, its artifact's ``governance`` metadata naming
the ``ApprovalRequired`` (``approval.required``) and the approvals (``approval.1`` ...); one
valid refusal denies the request APPROVAL_REFUSED.

:meth:`Approvals.sweep` ends pending requests whose deadline passed (APPROVAL_EXPIRED),
whose tenant, requester or holder is suspended, whose parent artifact was revoked
(PARENT_REVOKED), or whose requester's key is no longer in force (KEY_REVOKED). The engine
runs it before every input on a tree stream, and :meth:`Approvals.expire` does the same
without an input: the worker calls it when no input arrives, and so at start, so a deadline
that passed while the processor was down denies as soon as it runs again (the journal
restores the pending requests first). Each request ended that way is journaled as an entry of
its own: its ``ApprovalRequired`` as the input, the denial as the output
(:func:`ended_subject` names it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.core.approval_events import (
    MAX_APPROVERS,
    ApprovalGiven,
    ApprovalRefused,
    ApprovalRequired,
)
from ledger.core.envelope import (
    StoredPayload,
    VerifiedEvent,
    parse_envelope,
    read_stored,
    sign_event,
    sign_event_with_id,
    sign_payload_with_id,
    verify_stored,
)
from ledger.core.events import (
    Artifact,
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRequested,
    Event,
)
from ledger.core.governance import GovernanceState
from ledger.core.keys import KeyRing, Signer
from ledger.core.signers import verify_loggable
from ledger.core.streams import Stream
from ledger.errors import Reason, Rejected, Unavailable
from processors.core.checks import suspended
from processors.core.freshness import Limits
from processors.core.grants import grant_payload
from processors.core.lineage import LineageState
from processors.core.outcomes import Outcome, Output, authority_nonce

MAX_TTL = timedelta(days=7)
MAX_ENDED = 100_000  # ended request ids remembered, so a late approval says why it ended
_RULE = re.compile(r"^role=([a-z][a-z0-9_.-]{0,63}),k=([1-9][0-9]?),ttl=([1-9][0-9]{0,6})$")
_META_ROOM = 1 + MAX_APPROVERS  # metadata entries an approved artifact adds
_ANSWERS = (ApprovalRequired, AuthorizationGranted, AuthorizationDenied)
APPROVAL_PREFIX = "approval."


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Who must approve (``role``), how many distinct approvers (``k``), within ``ttl``."""

    role: str
    k: int
    ttl: timedelta


def parse_rule(text: str) -> ApprovalRule:
    """``role=R,k=K,ttl=SECONDS`` (in that order, no spaces). Raises ValueError."""
    match = _RULE.match(text)
    if match is None:
        raise ValueError(f"@approval({text!r}) is not 'role=ROLE,k=K,ttl=SECONDS'")
    role, k, ttl = match.group(1), int(match.group(2)), timedelta(seconds=int(match.group(3)))
    if k > MAX_APPROVERS:
        raise ValueError(f"@approval({text!r}): k is at most {MAX_APPROVERS}")
    if ttl > MAX_TTL:
        raise ValueError(f"@approval({text!r}): ttl is at most {int(MAX_TTL.total_seconds())}")
    return ApprovalRule(role, k, ttl)


def rule_for(rules: Mapping[str, ApprovalRule], policy_ids: tuple[str, ...]) -> ApprovalRule | None:
    """The approval the determining policies of a grant ask for, None if none does.
    Raises Rejected(POLICY_DENY) when they ask for different ones (fail closed: the policy
    author must say which)."""
    asked = {rules[i] for i in policy_ids if i in rules}
    if len(asked) > 1:
        raise Rejected(Reason.POLICY_DENY, "determining policies ask for different approvals: "
                       + ", ".join(sorted(i for i in policy_ids if i in rules)))
    return next(iter(asked), None)


def check_context(context: Mapping[str, object]) -> None:
    """Refuse a request context naming ``approval.*`` keys: in an artifact they are the
    authority's record of its approvals (the evidence bundle and the log's causal order
    follow them), never the requester's. Raises Rejected(MALFORMED)."""
    if any(key.startswith(APPROVAL_PREFIX) for key in context):
        raise Rejected(Reason.MALFORMED, f"context keys starting {APPROVAL_PREFIX!r} are "
                       "reserved for the authority's approvals")


@dataclass(slots=True)
class Pending:
    """A request waiting for approvals: its signed ``ApprovalRequired`` (id ``required_id``),
    the requester's key id, and the approvals so far (approver identity -> event id)."""

    required: ApprovalRequired
    required_id: str
    requester_key: str
    envelope: bytes
    approvals: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.required.artifact.lineage.root


@dataclass(slots=True)
class Approvals:
    """The pending requests of one engine, and the authority that answers for them."""

    authority: Signer
    identity: str
    pending: dict[str, Pending] = field(default_factory=dict)
    ended: dict[str, Reason] = field(default_factory=dict)

    def require(self, request_id: str, artifact: Artifact, rule: ApprovalRule, requester_key: str,
                now: datetime, position: int) -> Outcome:
        """Hold ``request_id`` pending and answer it with a signed ApprovalRequired; the
        deadline is ``now + ttl``, or the artifact's end if sooner. Raises Rejected
        (POLICY_DENY) when the request's metadata leaves no room for the approval ids."""
        if len(artifact.governance) + _META_ROOM > 32:
            raise Rejected(Reason.POLICY_DENY, "request context too large for an approval "
                           f"(at most {32 - _META_ROOM} entries)")
        required = ApprovalRequired(
            signer=self.identity, tenant=artifact.tenant, nonce=authority_nonce("p", request_id),
            issued_at=now, request_id=request_id, artifact=artifact, role=rule.role, k=rule.k,
            deadline=min(now + rule.ttl, artifact.window.not_after),
            policy_ids=artifact.policy_ids, governance=position)
        envelope, required_id = sign_event_with_id(required, self.authority)
        self.pending[request_id] = Pending(required, required_id, requester_key, envelope)
        return Outcome(request_id, (Output(Stream.DECISIONS, artifact.lineage.root.encode(),
                                           envelope),))

    def sweep(self, now: datetime, lineage: LineageState, governance: GovernanceState,
              keyring: KeyRing) -> tuple[Output, ...]:
        """End every pending request that can no longer be granted (module docstring): the
        signed denials, in request order."""
        return tuple(output for *_, output in self.expire(now, lineage, governance, keyring))

    def expire(self, now: datetime, lineage: LineageState, governance: GovernanceState,
               keyring: KeyRing) -> list[tuple[Pending, Reason, Output]]:
        """:meth:`sweep`, with each ended request's pending state and reason beside its
        denial."""
        ended: list[tuple[Pending, Reason, Output]] = []
        for request_id, pending in list(self.pending.items()):
            if (why := _why_ended(pending, now, lineage, governance, keyring)) is not None:
                ended.append((pending, why[0], self._end(request_id, why[0], why[1], now,
                                                         governance.position)))
        return ended

    def answer(self, verified: VerifiedEvent, now: datetime, limits: Limits,
               lineage: LineageState, position: int) -> Outcome:
        """Decide one verified ApprovalGiven / ApprovalRefused (module docstring)."""
        event = verified.event
        assert isinstance(event, ApprovalGiven | ApprovalRefused)
        try:
            pending = self._countable(verified, now, limits)
        except Rejected as exc:
            denial = self._denial(verified.event_id, event.tenant, event.root, exc.reason,
                                  exc.detail, now, position)
            return Outcome(verified.event_id, (denial,), allow=False, reasons=(exc.reason,))
        if isinstance(event, ApprovalRefused):
            ended = self._end(event.request_id, Reason.APPROVAL_REFUSED,
                              f"refused by {event.signer}: {event.reason}", now, position)
            return Outcome(verified.event_id, (ended,), allow=False,
                           reasons=(Reason.APPROVAL_REFUSED,))
        pending.approvals[event.signer] = verified.event_id
        if len(pending.approvals) < pending.required.k:  # counted; the request still waits
            return Outcome(verified.event_id, ())
        return Outcome(verified.event_id, (self._grant(pending, now, position, lineage),),
                       allow=True)

    def _countable(self, verified: VerifiedEvent, now: datetime, limits: Limits) -> Pending:
        """The pending request an approval counts for. Raises Rejected (why it cannot)."""
        event = verified.event
        assert isinstance(event, ApprovalGiven | ApprovalRefused)
        pending = self.pending.get(event.request_id)
        if pending is None:
            if self.ended.get(event.request_id) is Reason.APPROVAL_EXPIRED:
                raise Rejected(Reason.APPROVAL_EXPIRED, "the request's deadline passed")
            raise Rejected(Reason.NOT_PENDING, "no such request is waiting for approval")
        required = pending.required
        if event.root != pending.root:
            raise Rejected(Reason.NOT_PENDING, "the request is in another lineage tree")
        if event.tenant != required.tenant:
            raise Rejected(Reason.TENANT_MISMATCH, "an approver of another tenant")
        if event.issued_at > now + limits.max_clock_skew:
            raise Rejected(Reason.NOT_YET_VALID)
        if event.issued_at < now - limits.max_request_age:
            raise Rejected(Reason.EXPIRED)
        if required.role not in verified.principal.roles:
            raise Rejected(Reason.NOT_APPROVER, f"{event.signer} has no {required.role} role")
        if event.signer in (required.artifact.initiator, required.artifact.holder):
            raise Rejected(Reason.SELF_APPROVAL, "the requester or holder cannot approve")
        if event.signer in pending.approvals:
            raise Rejected(Reason.APPROVAL_DUPLICATE, f"{event.signer} already approved")
        return pending

    def _grant(self, pending: Pending, now: datetime, position: int,
               lineage: LineageState) -> Output:
        """The quorum's grant: the pending artifact, its metadata naming the approvals."""
        request_id = pending.required.request_id
        artifact = pending.required.artifact
        names = {"approval.required": pending.required_id}
        names |= {f"approval.{n}": eid for n, eid in enumerate(pending.approvals.values(), 1)}
        artifact = artifact.model_copy(update={"governance": {**artifact.governance, **names}})
        payload = grant_payload(signer=self.identity, tenant=artifact.tenant,
                                nonce=authority_nonce("g", request_id), issued_at=now,
                                request_id=request_id, artifact=artifact, governance=position)
        envelope, artifact_id = sign_payload_with_id(AuthorizationGranted.KIND, payload,
                                                     self.authority)
        lineage.add_grant(artifact_id, artifact)
        self.close(request_id, None)
        return Output(Stream.DECISIONS, artifact.lineage.root.encode(), envelope)

    def _end(self, request_id: str, reason: Reason, detail: str, now: datetime,
             position: int) -> Output:
        pending = self.pending[request_id]
        self.close(request_id, reason)
        return self._denial(request_id, pending.required.tenant, pending.root, reason, detail,
                            now, position)

    def _denial(self, subject: str, tenant: str, root: str, reason: Reason, detail: str,
                now: datetime, position: int) -> Output:
        denial = AuthorizationDenied(signer=self.identity, tenant=tenant,
                                     nonce=authority_nonce("d", subject), issued_at=now,
                                     request_id=subject, reasons=(reason,),
                                     detail=detail[:512], root=root, governance=position)
        return Output(Stream.DECISIONS, root.encode(), sign_event(denial, self.authority))

    def close(self, request_id: str, reason: Reason | None) -> None:
        """The request is no longer pending (granted: ``reason`` None, or denied)."""
        self.pending.pop(request_id, None)
        if reason is not None:
            if len(self.ended) >= MAX_ENDED:
                self.ended.pop(next(iter(self.ended)))
            self.ended[request_id] = reason

    # -- restore (the engine's journal replay) -------------------------------------------


def ended_subject(required_id: str) -> str:
    """The journal subject of a pending request ended without an input (:meth:`Approvals.
    expire`): derived from its ApprovalRequired's id, so it names no event and meets no
    other subject."""
    return hashlib.sha256(b"govledger.approval-ended\x00" + required_id.encode()).hexdigest()


def restore_approvals(approvals: Approvals, stream: Stream, raw: bytes, arrival: datetime,
                      outcome: Outcome, keyring: KeyRing, identity: str) -> None:
    """Re-apply what one journaled outcome did to the pending approvals (never re-decide):
    an ApprovalRequired opens one, a grant or denial naming a pending request closes it, an
    approval that counted (no answer of its own) is counted again. Every one is verified
    again (the authority's answers under its key, an approval under the approver's key at
    its arrival), so the journal file alone cannot add an approval. Raises Unavailable."""
    for output in outcome.outputs:
        stored = read_stored(output.value) if output.stream is Stream.DECISIONS else None
        if stored is None or stored.model not in _ANSWERS:
            continue
        if stored.model is not ApprovalRequired and (
                stored.fields.get("request_id") not in approvals.pending):
            continue  # an ordinary decision: no pending request to close, nothing to verify
        event, signed_id = _verified(stored, keyring, identity, outcome)
        if isinstance(event, ApprovalRequired):
            parsed = read_stored(raw)
            if parsed is None or parsed.model is not AuthorizationRequested:
                raise Unavailable(f"journal entry {outcome.subject[:16]}: an ApprovalRequired "
                                  "without its request")
            approvals.pending[event.request_id] = Pending(event, signed_id,
                                                          _key_id_of(raw, outcome),
                                                          output.value)
        elif isinstance(event, AuthorizationGranted):
            approvals.close(event.request_id, None)
        elif isinstance(event, AuthorizationDenied):
            approvals.close(event.request_id, event.reasons[0])
    if stream is Stream.REQUESTS and outcome.allow is None and not outcome.outputs:
        _restore_counted(approvals, raw, arrival, outcome, keyring)


def _restore_counted(approvals: Approvals, raw: bytes, arrival: datetime, outcome: Outcome,
                     keyring: KeyRing) -> None:
    stored = read_stored(raw)
    if stored is None or stored.model is not ApprovalGiven:
        return
    try:
        verified = verify_loggable(raw, keyring, arrival)
    except Rejected as exc:
        raise Unavailable(f"journal entry {outcome.subject[:16]}: its approval no longer "
                          f"verifies: {exc}") from exc
    event = verified.event
    pending = approvals.pending.get(event.request_id) if isinstance(event, ApprovalGiven) else None
    if pending is not None and verified.event_id == outcome.subject:
        pending.approvals.setdefault(event.signer, verified.event_id)


def _verified(stored: StoredPayload, keyring: KeyRing, identity: str,
              outcome: Outcome) -> tuple[Event, str]:
    try:
        return verify_stored(stored, keyring, identity)
    except Rejected as exc:
        raise Unavailable(f"journal entry {outcome.subject[:16]}: its {stored.model.KIND} does "
                          f"not verify under the authority key: {exc}") from exc


def _key_id_of(raw: bytes, outcome: Outcome) -> str:
    try:
        return parse_envelope(raw).key_id
    except Rejected as exc:
        raise Unavailable(f"journal entry {outcome.subject[:16]}: its request does not "
                          f"parse: {exc}") from exc


def _why_ended(pending: Pending, now: datetime, lineage: LineageState,
               governance: GovernanceState, keyring: KeyRing) -> tuple[Reason, str] | None:
    required = pending.required
    artifact = required.artifact
    if now >= required.deadline:
        return Reason.APPROVAL_EXPIRED, (f"{len(pending.approvals)} of {required.k} approvals "
                                         "at the deadline")
    parent = artifact.lineage.parent
    if (denied := suspended(governance, lineage, artifact.tenant, parent, artifact.initiator,
                            artifact.holder)) is not None:
        return denied.reasons[0], "suspended by governance while waiting for approval"
    if parent is not None:
        try:
            if lineage.is_revoked(parent):
                return Reason.PARENT_REVOKED, "revoked while waiting for approval"
        except ValueError:
            return Reason.LINEAGE_CYCLE, ""
    try:
        keyring.get(pending.requester_key).check_in_force(now)
    except Rejected as exc:
        return exc.reason, f"requester key: {exc.detail}"
    return None
