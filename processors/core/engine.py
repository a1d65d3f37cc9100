"""The decision engine: input bytes in, signed decisions out. No I/O, the clock is an argument.

The engine owns the decision state (lineage, replay memory, decisions already made:
processors/core/outcomes.py) and the authority key. The shell (processors/worker.py) feeds
it messages in partition order, makes its outputs durable in the processor journal,
publishes them, and only then commits offsets.

Idempotence (DESIGN.md section 6): one decision per request id and one verdict per execution
id. A redelivered message gets the *stored* decision bytes again, not REPLAY, and not a newly
signed twin, so the ledger holds one leaf for it.

Unauthenticated or undecodable input gets an authority-signed AuthorizationDenied whose
``request_id`` is the SHA-256 of the raw input, and the raw bytes go to the dead-letter topic:
one poison message never stalls a partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ledger.core.approval_events import APPROVAL_ANSWERS
from ledger.core.envelope import (
    VerifiedEvent,
    sign_event,
    sign_payload_with_id,
)
from ledger.core.events import (
    REVOKED_PER_EVENT,
    Artifact,
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRequested,
    AuthorizationRevoked,
    Event,
    Lineage,
    RevocationApplied,
    Shadow,
)
from ledger.core.execution_events import (
    ExecutionAllowed,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRefused,
    ExecutionRequested,
)
from ledger.core.governance import GovernanceState
from ledger.core.governance_events import GOVERNANCE_TYPES
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.core.signers import verify_loggable
from ledger.core.streams import INPUT_STREAMS, Stream
from ledger.errors import Reason, Rejected, Unavailable
from processors.core.approvals import (
    Approvals,
    check_context,
    ended_subject,
    restore_approvals,
    rule_for,
)
from processors.core.checks import (
    PolicyEngine,
    PolicyMemo,
    RateLimiter,
    Verdict,
    decide_execution,
    decide_request,
    decide_revocation,
)
from processors.core.freshness import Limits
from processors.core.governing import GOVERNANCE_KEY, Governor, NoPolicy, PolicyCompiler
from processors.core.grants import grant_payload
from processors.core.outcomes import DecisionState, Outcome, Output, authority_nonce, replayed
from processors.core.restoring import restore_input, restore_output

Recall = Callable[[str], Outcome | None]


class Engine:
    """Decides requests, executions and revocations for one authority."""

    def __init__(self, *, authority: Signer, authority_identity: str,
                 keyring: KeyRing | None = None, policy: PolicyEngine | None = None,
                 limiter: RateLimiter, limits: Limits, recall: Recall | None = None,
                 governance: GovernanceState | None = None,
                 compile_policy: PolicyCompiler | None = None,
                 operator: Principal | None = None) -> None:
        """``governance`` (with ``compile_policy`` for published policies and the genesis
        ``operator``) is the live governance state; without it, a fixed ``keyring`` and
        ``policy`` (tests and tools that decide under one policy)."""
        self.authority = authority
        self.identity = authority_identity
        state = governance or GovernanceState(keyring=keyring or KeyRing())
        state.authority_key = authority.key_id
        self.governor = Governor(state, compile_policy, limits, operator)
        self.keyring = state.keyring
        self.fixed_policy = policy
        self.policy: PolicyEngine = NoPolicy()
        self.policy_memo = PolicyMemo(self.policy)
        self.shadow_memo: PolicyMemo | None = None
        self._policy_changed()
        self.limiter = limiter
        self.limits = limits
        self.state = DecisionState()
        self.approvals = Approvals(authority, authority_identity)
        self.recall = recall
        # Called with a lineage root before anything is decided in that tree, so a shell
        # that keeps some trees' effects waiting (a group's worker) can apply them first.
        self.on_tree: Callable[[str], None] | None = None

    @property
    def governance(self) -> GovernanceState:
        return self.governor.state

    def _policy_changed(self) -> None:
        """Swap in the compiled policy the governance state names (or the fixed one): whole,
        between two inputs, so no decision sees half of a publication."""
        policy = self.fixed_policy or self.governor.policy() or NoPolicy()
        if policy is not self.policy:
            self.policy, self.policy_memo = policy, PolicyMemo(policy)
        shadow = None if self.fixed_policy else self.governor.shadow()
        if shadow is None:
            self.shadow_memo = None
        elif self.shadow_memo is None or self.shadow_memo.policy is not shadow:
            self.shadow_memo = PolicyMemo(shadow)

    @property
    def policy_digest(self) -> str | None:
        return self.policy.digest or None

    def earlier(self, subject: str) -> Outcome | None:
        """The outcome already decided for ``subject``, from the cache or the journal."""
        found = self.state.decided.get(subject)
        if found is None and self.recall is not None and not self.state.complete:
            found = self.recall(subject)
        return found

    # -- entry points --------------------------------------------------------------------

    def handle(self, stream: Stream, raw: bytes, now: datetime) -> Outcome:
        """Decide one message from ``stream`` received at ``now``. Never raises Rejected."""
        subject = hashlib.sha256(raw).hexdigest()
        if (earlier := self.earlier(subject)) is not None:     # rejected input seen before
            return replayed(earlier, raw)
        keyring = self.governor.keyring_for(stream is Stream.GOVERNANCE and self.governor.empty)
        try:  # the ledger's own admission rule: what is verified here, the ledger logs
            verified = verify_loggable(raw, keyring, now)
        except Rejected as exc:
            outcome = self._reject_input(subject, raw, exc, now)
            self.state.remember(subject, outcome)
            return outcome
        if (earlier := self.earlier(verified.event_id)) is not None:
            return replayed(earlier)
        # Pending approvals that can no longer be granted end first (deadline, revocation,
        # suspension); never on the governance stream, whose answers restore re-derives.
        ended = (self.approvals.sweep(now, self.state.lineage, self.governance, self.keyring)
                 if stream is not Stream.GOVERNANCE and self.approvals.pending else ())
        try:
            outcome = self._dispatch(stream, verified, now)
        except Rejected as exc:
            # The input made a decision impossible to build (e.g. an artifact past the size
            # cap): deny it rather than crash and stall the partition on redelivery.
            event = verified.event
            outcome = self._deny(verified.event_id, event.tenant,
                                 event.lineage_root() or verified.event_id,
                                 Verdict.deny(exc.reason, exc.detail), now)
        if ended:
            outcome = replace(outcome, outputs=(*ended, *outcome.outputs))
        self.state.remember(verified.event_id, outcome)
        self.state.replay.prune(now)
        return outcome

    def expire(self, now: datetime) -> list[tuple[bytes, Outcome]]:
        """End the pending approvals that can no longer be granted (deadline, suspension,
        revocation) without waiting for an input: the worker calls it when none arrives.
        Per request, what the journal keeps (processors/core/approvals.py): its
        ApprovalRequired envelope as the input (stream ``decisions``) and the outcome with
        the signed denial; :meth:`restore` replays it like any entry."""
        if not self.approvals.pending:
            return []
        ended = []
        for pending, reason, denial in self.approvals.expire(
                now, self.state.lineage, self.governance, self.keyring):
            outcome = Outcome(ended_subject(pending.required_id), (denial,), allow=False,
                              reasons=(reason,))
            self.state.remember(outcome.subject, outcome)
            ended.append((pending.envelope, outcome))
        return ended

    def restore(self, stream: Stream, raw: bytes, arrival: datetime, outcome: Outcome, *,
                effects: bool = True) -> None:
        """Re-apply the *effects* of a journaled outcome (never re-decide it): stored outputs,
        nonces, grants, uses, revocations. Inputs must come in journal order.

        Every effect on the lineage (a grant, a revocation, a use) is taken from the output
        the authority signed, and that signature is verified again, so the journal file alone
        cannot add a grant or move a revocation or a use to another artifact. Nonces and the
        rate limiter's tokens come from the inputs, read without a second verification (they
        were verified on arrival): an input refused then (its subject is the hash of the raw
        bytes, not an event id) has no effect beyond its stored denial, exactly as in an
        uninterrupted run.

        Raises Unavailable where the journal contradicts itself: an effect output that does
        not verify, an input that does not match its entry, an allowed entry without its
        signed effect, or an effect on an artifact that was never granted (a deleted or
        altered entry). Whole entries deleted consistently are not detectable here.

        ``effects=False`` restores everything but the lineage effects (the stored outcome,
        the nonce, the rate-limit token); :meth:`restore_effects` applies them later. A worker
        of a group uses this for trees it does not decide (processors/worker.py).
        """
        self.state.remember(outcome.subject, outcome)
        if effects:  # pending approvals live with their tree's effects (docs/approvals.md)
            restore_approvals(self.approvals, stream, raw, arrival, outcome, self.keyring,
                              self.identity)
        if stream is Stream.GOVERNANCE and hashlib.sha256(raw).hexdigest() != outcome.subject:
            self._restore_governance(raw, arrival, outcome)  # pending ones too
            return
        if outcome.allow is None and not outcome.outputs:
            return
        if stream in INPUT_STREAMS:
            if hashlib.sha256(raw).hexdigest() == outcome.subject:
                return  # refused on arrival: no effect beyond its stored denial
            restore_input(self.state, self.limits, self.limiter, stream, raw, arrival,
                          outcome)
        if effects:
            self.restore_effects(stream, outcome)

    def restore_effects(self, stream: Stream, outcome: Outcome) -> None:
        """The lineage effects of a journaled outcome restored with ``effects=False``; call
        in journal order within a lineage tree. Raises Unavailable as :meth:`restore`."""
        applied = [restore_output(self.state.lineage, self.keyring, self.identity, output,
                                  outcome) for output in outcome.outputs]
        if outcome.allow and stream in INPUT_STREAMS and not any(applied):
            raise Unavailable(f"journal entry {outcome.subject[:16]} was allowed but holds no "
                              "signed grant, revocation or allowed execution")

    def _restore_governance(self, raw: bytes, arrival: datetime, outcome: Outcome) -> None:
        """Decide a journaled governance input again at its arrival time; the answers must
        be the journaled bytes (processors/core/governing.py). Raises Unavailable."""
        keyring = self.governor.keyring_for(self.governor.empty)
        try:
            verified = verify_loggable(raw, keyring, arrival)
        except Rejected as exc:
            raise Unavailable(f"journal entry {outcome.subject[:16]}: its governance event no "
                              f"longer verifies: {exc}") from exc
        again = self._governance(verified, arrival)
        if [o.value for o in again.outputs] != [o.value for o in outcome.outputs]:
            raise Unavailable(f"journal entry {outcome.subject[:16]}: deciding its governance "
                              "event again gives other answers than the journaled ones")

    # -- per kind --------------------------------------------------------------------------

    def _dispatch(self, stream: Stream, verified: VerifiedEvent, now: datetime) -> Outcome:
        event = verified.event
        if self.on_tree is not None:
            self.on_tree(_tree_root(event, verified.event_id))
        if stream is Stream.GOVERNANCE and isinstance(event, GOVERNANCE_TYPES):
            return self._governance(verified, now)
        if stream is Stream.REQUESTS and isinstance(event, AuthorizationRequested):
            return self._request(verified, event, now)
        if stream is Stream.REQUESTS and isinstance(event, APPROVAL_ANSWERS):
            return self.approvals.answer(verified, now, self.limits, self.state.lineage,
                                         self.governance.position)
        if stream is Stream.EXECUTIONS and isinstance(event, ExecutionRequested):
            return self._execution(verified, event, now)
        if stream is Stream.REVOCATIONS and isinstance(event, AuthorizationRevoked):
            return self._revocation(verified, event, now)
        if stream is Stream.EXECUTIONS and isinstance(event, ExecutionCompleted | ExecutionFailed):
            return Outcome(verified.event_id, ())  # recorded by the ledger; nothing to decide
        denial = Verdict.deny(Reason.UNSUPPORTED_VERSION, f"{verified.kind} on {stream.value}")
        return self._deny(verified.event_id, event.tenant, event.lineage_root(), denial, now,
                          stream=Stream.DECISIONS)

    def _governance(self, verified: VerifiedEvent, now: datetime) -> Outcome:
        """Decide a governance event (processors/core/governing.py): applied, refused or
        pending; the answers go on the decisions stream under one key."""
        result = self.governor.decide(verified, now)
        if result.applied:
            self._policy_changed()
        answers = self.governor.answers(result, self.authority, self.identity, now)
        allow = (True if any(a.event_id == verified.event_id for a in result.applied)
                 else False if any(r.event_id == verified.event_id for r in result.refused)
                 else None)
        reasons = tuple(r.reason for r in result.refused if r.event_id == verified.event_id)
        return Outcome(verified.event_id,
                       tuple(Output(Stream.DECISIONS, GOVERNANCE_KEY, a) for a in answers),
                       allow=allow, reasons=reasons)

    def _request(self, verified: VerifiedEvent, request: AuthorizationRequested,
                 now: datetime) -> Outcome:
        root = request.lineage.root or verified.event_id
        verdict = decide_request(verified, self.state.lineage, self.state.replay,
                                 self.policy_memo, self.limiter, now, self.limits, self.keyring,
                                 self.governance, self.shadow_memo)
        if not verdict.allow:
            return self._deny(verified.event_id, request.tenant, root, verdict, now)
        check_context(request.context)  # Rejected: denied by handle
        artifact = Artifact(
            request_id=verified.event_id, initiator=request.signer,
            holder=request.holder_identity, tenant=request.tenant,
            scope=request.scope, environments=request.environments, window=request.window,
            single_use=request.single_use, policy_digest=self.policy.digest,
            policy_ids=verdict.policy_ids,
            lineage=Lineage(root=root, parent=request.lineage.parent,
                            depth=self.state.lineage.depth_of_child(request.lineage.parent)),
            governance=request.context)
        if (rule := rule_for(getattr(self.policy, "approval_rules", {}),
                             verdict.policy_ids)) is not None:
            return self.approvals.require(verified.event_id, artifact, rule, verified.key_id,
                                          now, self.governance.position)
        # The grant's payload written directly (processors/core/grants.py): byte for byte the
        # model's, without building and dumping an AuthorizationGranted per grant.
        payload = grant_payload(signer=self.identity, tenant=request.tenant,
                                nonce=authority_nonce("g", verified.event_id), issued_at=now,
                                request_id=verified.event_id, artifact=artifact,
                                governance=self.governance.position,
                                shadow=self._shadow(verdict))
        envelope, artifact_id = sign_payload_with_id(AuthorizationGranted.KIND, payload,
                                                     self.authority)
        self.state.lineage.add_grant(artifact_id, artifact)
        return Outcome(verified.event_id, (Output(Stream.DECISIONS, root.encode(), envelope),),
                       allow=True)

    def _execution(self, verified: VerifiedEvent, execution: ExecutionRequested,
                   now: datetime) -> Outcome:
        verdict = decide_execution(verified, self.state.lineage, self.state.replay, now,
                                   self.limits, self.governance)
        event: Event
        if verdict.allow:
            self.state.lineage.grants[execution.artifact_id].uses += 1
            event = ExecutionAllowed(
                signer=self.identity, tenant=execution.tenant,
                nonce=authority_nonce("v", verified.event_id), issued_at=now,
                artifact_id=execution.artifact_id, root=execution.root,
                execution_id=verified.event_id, governance=self.governance.position)
        else:
            event = ExecutionRefused(
                signer=self.identity, tenant=execution.tenant,
                nonce=authority_nonce("v", verified.event_id), issued_at=now,
                artifact_id=execution.artifact_id, root=execution.root,
                execution_id=verified.event_id, reasons=verdict.reasons, detail=verdict.detail,
                governance=self.governance.position)
        out = Output(Stream.VERDICTS, execution.root.encode(), sign_event(event, self.authority))
        return Outcome(verified.event_id, (out,), allow=verdict.allow, reasons=verdict.reasons)

    def _revocation(self, verified: VerifiedEvent, revocation: AuthorizationRevoked,
                    now: datetime) -> Outcome:
        verdict = decide_revocation(verified, self.state.lineage)
        if not verdict.allow:
            return self._deny(verified.event_id, revocation.tenant, revocation.root, verdict,
                              now)
        revoked = self.state.lineage.revoke(revocation.artifact_id, verified.event_id)
        # The whole subtree, in chunks of REVOKED_PER_EVENT ids: all of them in this one
        # outcome, so they are journaled (and published after a crash) together.
        starts = range(0, len(revoked), REVOKED_PER_EVENT)
        outputs = tuple(
            Output(Stream.DECISIONS, revocation.root.encode(), sign_event(RevocationApplied(
                signer=self.identity, tenant=revocation.tenant,
                nonce=authority_nonce("r" if chunk == 0 else f"r{chunk}", verified.event_id),
                issued_at=now, revocation_id=verified.event_id,
                artifact_id=revocation.artifact_id, root=revocation.root,
                revoked=tuple(revoked[start:start + REVOKED_PER_EVENT]),
                chunk=chunk, chunks=len(starts), governance=self.governance.position),
                self.authority))
            for chunk, start in enumerate(starts))
        return Outcome(verified.event_id, outputs, allow=True)

    def _deny(self, subject: str, tenant: str, root: str | None, verdict: Verdict,
              now: datetime, stream: Stream = Stream.DECISIONS) -> Outcome:
        denial = AuthorizationDenied(
            signer=self.identity, tenant=tenant, nonce=authority_nonce("d", subject), issued_at=now,
            request_id=subject, reasons=verdict.reasons, detail=verdict.detail, root=root,
            policy_digest=self.policy_digest, policy_ids=verdict.policy_ids,
            governance=self.governance.position, shadow=self._shadow(verdict))
        key = (root or subject).encode()
        return Outcome(subject, (Output(stream, key, sign_event(denial, self.authority)),),
                       allow=False, reasons=verdict.reasons)

    def _shadow(self, verdict: Verdict) -> Shadow | None:
        """The shadow policy's outcome for the decision, where the policy was asked."""
        if verdict.shadow is None or self.shadow_memo is None:
            return None
        return Shadow(policy_digest=self.shadow_memo.policy.digest,
                      allow=verdict.shadow.allow, policy_ids=verdict.shadow.policy_ids)

    def _reject_input(self, subject: str, raw: bytes, exc: Rejected, now: datetime) -> Outcome:
        """Unauthenticated input: a signed denial naming its hash, and the bytes to dead-letter."""
        denied = self._deny(subject, "*", None, Verdict.deny(exc.reason, exc.detail), now)
        dead = Output(Stream.DEADLETTER, subject.encode(), raw)
        return Outcome(subject, (*denied.outputs, dead), allow=False, reasons=denied.reasons)


def _tree_root(event: Event, own_id: str) -> str:
    """The lineage tree an input claims to act in (its checks refuse a false claim)."""
    if isinstance(event, ExecutionRequested | AuthorizationRevoked):
        return event.root
    return event.lineage_root() or own_id

