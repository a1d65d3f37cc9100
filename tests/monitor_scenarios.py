"""Event sequences for the monitor's rules: one honest execution and one per rule, signed.

Each scenario is a list of ``(stream, envelope)`` in the order a real system would publish
them, and the event id its alert must name as evidence (None for the honest flow). Used
by the pure rule tests (tests/unit/test_monitor_rules.py) and on the real embedded broker
(tests/integration/test_monitor.py), so both judge the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ledger.core.envelope import sign_event_with_id
from ledger.core.events import (
    Artifact,
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRequested,
    Event,
    Lineage,
    LineageRef,
    RevocationApplied,
    Scope,
    Window,
)
from ledger.core.execution_events import ExecutionAllowed, ExecutionCompleted, ExecutionRequested
from ledger.core.keys import Signer
from ledger.errors import Reason
from tests.factories import ENV

_COUNTER = itertools.count()


def nonce(label: str) -> str:
    return f"mon-{label}-{next(_COUNTER):08d}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


@dataclass
class Scenario:
    """Signs events as a real system would: the agent requests, the authority grants and
    allows, the runner executes and reports."""

    authority: Signer
    authority_id: str
    agent: Signer
    runner: Signer
    start: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    published: list[tuple[str, bytes, str, Event]] = field(default_factory=list)

    def emit(self, stream: str, event: Event, signer: Signer) -> str:
        envelope, event_id = sign_event_with_id(event, signer)
        self.published.append((stream, envelope, event_id, event))
        return event_id

    def granted(self, *, ttl: timedelta = timedelta(minutes=30),
                resource: str = "db/orders/*") -> tuple[str, str]:
        """A request by agent:alice and its grant. Returns (root, artifact id)."""
        t = self.start
        req = AuthorizationRequested(
            signer="agent:alice", tenant="acme", nonce=nonce("req"), issued_at=t,
            scope=Scope(actions=("read",), resource=resource), environments=(ENV,),
            window=Window(not_before=t, not_after=t + ttl), lineage=LineageRef())
        root = self.emit("requests", req, self.agent)
        artifact = Artifact(
            request_id=root, initiator="agent:alice", holder="agent:alice", tenant="acme",
            scope=req.scope, environments=(ENV,), window=req.window, single_use=False,
            policy_digest="sha256:" + "0" * 64, policy_ids=(),
            lineage=Lineage(root=root, parent=None, depth=0), governance={})
        grant = AuthorizationGranted(signer=self.authority_id, tenant="acme",
                                     nonce=nonce("grant"), issued_at=t, request_id=root,
                                     artifact=artifact)
        return root, self.emit("decisions", grant, self.authority)

    def execute(self, root: str, artifact_id: str, *, action: str = "read",
                resource: str = "db/orders/1", at: datetime | None = None,
                allowed: bool = True, report: bool = True) -> str:
        """runner:1 asks, the authority allows (or not), runner:1 reports. Returns the id
        of the report (or of the allowance when ``report`` is False)."""
        at = at or self.start + timedelta(seconds=1)
        requested = ExecutionRequested(
            signer="runner:1", tenant="acme", nonce=nonce("exec"), issued_at=at,
            artifact_id=artifact_id, root=root, action=action, resource=resource,
            environment=ENV)
        execution_id = self.emit("executions", requested, self.runner)
        last = execution_id
        if allowed:
            last = self.emit("verdicts", ExecutionAllowed(
                signer=self.authority_id, tenant="acme", nonce=nonce("allow"), issued_at=at,
                artifact_id=artifact_id, root=root, execution_id=execution_id), self.authority)
        if report:
            last = self.emit("executions", ExecutionCompleted(
                signer="runner:1", tenant="acme", nonce=nonce("done"), issued_at=at,
                artifact_id=artifact_id, root=root, execution_id=execution_id), self.runner)
        return last

    def revoked(self, root: str, artifact_id: str) -> str:
        return self.emit("decisions", RevocationApplied(
            signer=self.authority_id, tenant="acme", nonce=nonce("revoke"),
            issued_at=self.start, revocation_id=hashlib.sha256(b"r" + root.encode()).hexdigest(),
            artifact_id=artifact_id, root=root, revoked=(artifact_id,)), self.authority)

    def denied(self, reason: Reason) -> str:
        """A request by agent:alice and its denial for ``reason``. Returns the denial id."""
        t = self.start
        req = AuthorizationRequested(
            signer="agent:alice", tenant="acme", nonce=nonce("dreq"), issued_at=t,
            scope=Scope(actions=("read",), resource="db/x"), environments=(ENV,),
            window=Window(not_before=t, not_after=t + timedelta(minutes=5)))
        request_id = self.emit("requests", req, self.agent)
        return self.emit("decisions", AuthorizationDenied(
            signer=self.authority_id, tenant="acme", nonce=nonce("deny"), issued_at=t,
            request_id=request_id, reasons=(reason,), root=request_id), self.authority)

    # -- one per rule --------------------------------------------------------------------

    def honest(self) -> None:
        root, artifact = self.granted()
        self.execute(root, artifact)

    def unallowed(self) -> str:
        root, artifact = self.granted()
        return self.execute(root, artifact, allowed=False)

    def after_revocation(self) -> str:
        root, artifact = self.granted()
        self.revoked(root, artifact)
        return self.execute(root, artifact, at=self.start + timedelta(seconds=2))

    def outside_window(self) -> str:
        root, artifact = self.granted(ttl=timedelta(seconds=1))
        return self.execute(root, artifact, at=self.start + timedelta(seconds=5))

    def out_of_scope(self) -> str:
        root, artifact = self.granted(resource="db/orders/eu/*")
        return self.execute(root, artifact, resource="db/orders/us/1")

    def silent(self) -> str:
        root, artifact = self.granted()
        return self.execute(root, artifact, report=False)

    def burst(self, count: int, reason: Reason = Reason.SIGNATURE_INVALID) -> str:
        return [self.denied(reason) for _ in range(count)][-1]
