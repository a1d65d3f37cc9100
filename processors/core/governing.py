"""The engine's governance side: decide governance inputs, keep the compiled policies in step
with the governance state, and build the authority's answers. Pure: no I/O, time is an
argument; the policy compiler is the shell's (processors/policy.py), passed in.

The governance state is a deterministic function of the governance inputs and their arrival
times: a restart decides the journaled ones again and checks that the answers are, byte for
byte, the ones journaled (:meth:`Governor.restore`), so a journal cannot smuggle in a key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ledger.core.envelope import VerifiedEvent, sign_event
from ledger.core.events import AuthorizationDenied, Event
from ledger.core.governance import (
    Applied,
    GovernanceState,
    Refused,
    Result,
    bootstrap,
    decide,
)
from ledger.core.governance_events import GovernanceApplied
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.errors import ConfigError, Reason, Rejected
from processors.core.checks import PolicyEngine, PolicyResult
from processors.core.freshness import Limits
from processors.core.outcomes import authority_nonce

PolicyCompiler = Callable[[Mapping[str, str]], PolicyEngine]
GOVERNANCE_KEY = b"governance"  # the partition key of every governance answer
MAX_COMPILED = 8


class NoPolicy:
    """The policy before any is published: every evaluation is an error, so a denial."""

    digest = ""

    def evaluate(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object]) -> PolicyResult:
        raise LookupError("no policy is in force: publish one (govledger policy publish)")


@dataclass(slots=True)
class Governor:
    """Governance for one engine: the state, the compiled enforced and shadow policies."""

    state: GovernanceState
    compile_policy: PolicyCompiler | None
    limits: Limits
    operator: Principal | None = None  # the genesis trust anchor (keys/operator.pub)
    compiled: dict[str, PolicyEngine] = field(default_factory=dict)

    def policy(self) -> PolicyEngine | None:
        """The compiled enforced policy, None while none is published."""
        record = self.state.policy
        return None if record is None else self._compile(record.files, record.digest)

    def shadow(self) -> PolicyEngine | None:
        record = self.state.shadow
        return None if record is None else self._compile(record.files, record.digest)

    def check_policy(self, files: Mapping[str, str]) -> str:
        """ledger.core.governance.PolicyCheck: compile (validating against the schema) and
        return the digest. Raises Rejected(POLICY_INVALID)."""
        return self._compile(files, None).digest

    def _compile(self, files: Mapping[str, str], digest: str | None) -> PolicyEngine:
        if digest is not None and digest in self.compiled:
            return self.compiled[digest]
        if self.compile_policy is None:
            raise Rejected(Reason.POLICY_INVALID, "this engine compiles no policies")
        try:
            policy = self.compile_policy(files)
        except ConfigError as exc:
            raise Rejected(Reason.POLICY_INVALID, str(exc)) from exc
        if len(self.compiled) >= MAX_COMPILED:
            self.compiled.pop(next(iter(self.compiled)))
        self.compiled[policy.digest] = policy
        return policy

    def keyring_for(self, data_is_genesis: bool) -> KeyRing:
        """The keyring an input on the governance topic verifies under: the state's, or on
        an empty state only the operator anchor (the genesis event registers itself)."""
        if data_is_genesis and self.operator is not None:
            return KeyRing([self.operator])
        return self.state.keyring

    @property
    def empty(self) -> bool:
        return self.state.position == 0

    def decide(self, verified: VerifiedEvent, now: datetime) -> Result:
        """Decide one verified governance input (ledger.core.governance.decide); on an empty
        state, the genesis event under the operator anchor (bootstrap)."""
        if self.empty:
            try:
                return Result(applied=(bootstrap(self.state, verified),))
            except Rejected as exc:
                return Result(refused=(Refused(verified.event_id, verified.event.tenant,
                                               exc.reason, exc.detail),))
        return decide(self.state, verified, now, check_policy=self.check_policy,
                      max_age=self.limits.max_request_age, max_skew=self.limits.max_clock_skew)

    def answers(self, result: Result, authority: Signer, identity: str,
                now: datetime) -> list[bytes]:
        """The authority's signed answers to a result: a GovernanceApplied per applied event,
        an AuthorizationDenied naming each refused one (DESIGN.md 6a)."""
        events: list[Event] = [_applied(a, identity, now) for a in result.applied]
        events += [_refused(r, identity, now, self.state.position) for r in result.refused]
        return [sign_event(event, authority) for event in events]


def _applied(applied: Applied, identity: str, now: datetime) -> GovernanceApplied:
    return GovernanceApplied(signer=identity, tenant=applied.tenant,
                             nonce=authority_nonce("a", applied.event_id),
                             issued_at=now, request_id=applied.event_id,
                             applied_kind=applied.kind, position=applied.position,
                             approvals=applied.approvals, policy_digest=applied.policy_digest)


def _refused(refused: Refused, identity: str, now: datetime, position: int) -> AuthorizationDenied:
    return AuthorizationDenied(signer=identity, tenant=refused.tenant,
                               nonce=authority_nonce("d", refused.event_id), issued_at=now,
                               request_id=refused.event_id,
                               reasons=(refused.reason,), detail=refused.detail[:512],
                               governance=position)
