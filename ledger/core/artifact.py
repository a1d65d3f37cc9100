"""The artifact rule (DESIGN.md section 4), for the executor gate and the processor alike.

:func:`artifact_refusal` is the rule itself: may this artifact be used now, for this action on
this resource, in this measured environment? The gate (``ledger.sdk.gate``, through
:func:`check_artifact`) and the processor's execution checks (``processors.core.checks``)
both ask it. What only one of them checks stays there: the gate verifies the artifact's
signature; the processor knows revocations, uses and lineage.

The artifact an executor holds is the authority-signed AuthorizationGranted envelope; its
artifact id is that envelope's event id. :func:`check_artifact` runs, in order:

1. the envelope verifies (strict parse, known key, Ed25519 over PAE, canonical payload), is an
   AuthorizationGranted, and its signer holds the ``authority`` role: ARTIFACT_INVALID
   (or the envelope's own reason code);
2. the window holds at ``now``: ``not_before <= now < not_after`` (NOT_YET_VALID, EXPIRED);
3. the runtime identity is the artifact's holder or an ``executor`` of its tenant:
   IDENTITY_MISMATCH;
4. the action is in scope and the concrete resource matches the pattern: SCOPE_MISMATCH;
5. the environment digest measured at run time is one the artifact names: ENV_MISMATCH.

Pure: the clock, the keyring and the measurement are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.core.envelope import verify_envelope
from ledger.core.events import Artifact, AuthorizationGranted
from ledger.core.keys import KeyRing, Principal
from ledger.core.scope import matches
from ledger.errors import BadSignature, Reason, Rejected


@dataclass(frozen=True, slots=True)
class CheckedArtifact:
    artifact_id: str
    grant: AuthorizationGranted
    envelope: bytes

    @property
    def artifact(self) -> Artifact:
        return self.grant.artifact


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an artifact may not be used: a reason code and words for a human."""

    reason: Reason
    detail: str


#: The reasons of the window step: the processor signs them without a detail.
WINDOW_REASONS = frozenset({Reason.NOT_YET_VALID, Reason.EXPIRED})


def artifact_refusal(art: Artifact, now: datetime, *, action: str, resource: str,
                     environment: str, runtime: Principal | None = None) -> Refusal | None:
    """The first reason ``art`` may not be used at ``now`` for ``action`` on ``resource`` in
    the measured ``environment``, or None. Steps 2-5 of the module docstring, in order; step
    3 only with ``runtime`` (the gate: the processor checks the identity earlier in its own
    order, bound to the execution's tenant, and passes None)."""
    if now < art.window.not_before:                                               # 2
        return Refusal(Reason.NOT_YET_VALID, "artifact window has not started")
    if now >= art.window.not_after:
        return Refusal(Reason.EXPIRED, "artifact window has ended")
    if runtime is not None and runtime.identity != art.holder and not (          # 3
            "executor" in runtime.roles and runtime.tenant in ("*", art.tenant)):
        return Refusal(Reason.IDENTITY_MISMATCH, f"{runtime.identity} may not use it")
    try:                                                                          # 4
        in_scope = action in art.scope.actions and matches(art.scope.resource, resource)
    except Rejected:
        in_scope = False
    if not in_scope:
        return Refusal(Reason.SCOPE_MISMATCH, f"{action} on {resource[:100]} not in scope")
    if environment not in art.environments:                                       # 5
        return Refusal(Reason.ENV_MISMATCH, "measured environment not authorized")
    return None


def check_artifact(grant_envelope: bytes, keyring: KeyRing, now: datetime, *,
                   runtime: Principal, action: str, resource: str,
                   environment: str) -> CheckedArtifact:
    """Verify an artifact offline for one execution. Raises Rejected with the reason code."""
    verified = verify_envelope(grant_envelope, keyring, now)                       # 1
    grant = verified.event
    if not isinstance(grant, AuthorizationGranted):
        raise Rejected(Reason.ARTIFACT_INVALID, f"{verified.kind} is not a grant")
    if "authority" not in verified.principal.roles:
        raise BadSignature(Reason.ARTIFACT_INVALID, "grant not signed by an authority key")
    refused = artifact_refusal(grant.artifact, now, action=action, resource=resource,  # 2-5
                               environment=environment, runtime=runtime)
    if refused is not None:
        raise Rejected(refused.reason, refused.detail)
    return CheckedArtifact(verified.event_id, grant, grant_envelope)
