"""The canonical payload of an AuthorizationGranted, written without the grant model.

``payload_bytes(AuthorizationGranted(...))`` builds a pydantic model, dumps it to a dict and
encodes that; the engine signs one grant per granted request, so it (and the approval quorum,
processors/core/approvals.py: one encoder of grants in the processor) writes the same dict
directly from the (already validated) :class:`~ledger.core.events.Artifact` and encodes it
with the same RFC 8785 encoder. The published bytes are the contract: the result must equal
the model path byte for byte (``tests/property/test_grant_payload_properties.py`` checks it
on generated artifacts; every verifier refuses a payload that is not the canonical encoding
of its model, which the engine, worker and service tests exercise on every grant). The
grant's own fields (signer, tenant, nonce, issued_at, request_id) come from the engine's
configuration and the verified request, the same values the model would have validated.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger.core.canonical import canonical_bytes_of_safe
from ledger.core.events import Artifact, AuthorizationGranted, Shadow, format_time
from ledger.errors import InvalidEvent, Reason


def grant_payload(*, signer: str, tenant: str, nonce: str, issued_at: datetime,
                  request_id: str, artifact: Artifact, governance: int | None = None,
                  shadow: Shadow | None = None) -> bytes:
    """``payload_bytes(AuthorizationGranted(signer=..., ..., artifact=artifact,
    governance=..., shadow=...))``: ``governance`` and ``shadow`` are absent when None, as
    the model omits them. Raises InvalidEvent where the model would refuse what the
    engine's own values cannot otherwise get wrong: a time that is not UTC, a negative
    position (the artifact is a validated model; signer, tenant, nonce and request id are
    the engine's configured identity and the verified request's)."""
    if issued_at.utcoffset() != timedelta(0):
        raise InvalidEvent(Reason.MALFORMED, "issued_at must be UTC with an explicit offset")
    if governance is not None and governance < 0:
        raise InvalidEvent(Reason.MALFORMED, "the governance position is negative")
    window, lineage, scope = artifact.window, artifact.lineage, artifact.scope
    body = {
        "request_id": artifact.request_id, "initiator": artifact.initiator,
        "holder": artifact.holder, "tenant": artifact.tenant,
        "scope": {"actions": list(scope.actions), "resource": scope.resource},
        "environments": list(artifact.environments),
        "window": {"not_before": format_time(window.not_before),
                   "not_after": format_time(window.not_after)},
        "single_use": artifact.single_use, "policy_digest": artifact.policy_digest,
        "policy_ids": list(artifact.policy_ids),
        "lineage": {"root": lineage.root, "parent": lineage.parent, "depth": lineage.depth},
        "governance": dict(artifact.governance),
    }
    grant: dict[str, object] = {
        "signer": signer, "tenant": tenant, "nonce": nonce, "issued_at": format_time(issued_at),
        "kind": AuthorizationGranted.KIND, "request_id": request_id, "artifact": body}
    if governance is not None:
        grant["governance"] = governance
    if shadow is not None:
        grant["shadow"] = {"policy_digest": shadow.policy_digest, "allow": shadow.allow,
                           "policy_ids": list(shadow.policy_ids)}
    return canonical_bytes_of_safe(grant)
