"""Signed approvals, built for a person with an approver role (docs/approvals.md).

:class:`Approver` signs ``ApprovalGiven`` / ``ApprovalRefused`` for a pending request with
the approver's key under the approver's identity; submit the bytes with ``POST /v1/events``
(or ``Client.send_raw("requests", envelope, root)``: approvals travel on the requests stream
keyed by the request's lineage root, which ``GET /v1/approvals/{id}`` names). Nonces are
random; ``issued_at`` is the approver's clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.core.approval_events import ApprovalGiven, ApprovalRefused
from ledger.core.envelope import sign_event
from ledger.core.keys import Signer


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Approver:
    """A principal holding an approver role: identity, tenant, signing key."""

    identity: str
    tenant: str
    signer: Signer
    clock: Callable[[], datetime] = _now

    def approve(self, request_id: str, root: str, reason: str = "") -> bytes:
        """An ApprovalGiven for ``request_id`` (lineage root ``root``), signed."""
        return sign_event(ApprovalGiven(
            signer=self.identity, tenant=self.tenant, nonce=secrets.token_hex(16),
            issued_at=self.clock(), request_id=request_id, root=root, reason=reason),
            self.signer)

    def refuse(self, request_id: str, root: str, reason: str = "") -> bytes:
        """An ApprovalRefused for ``request_id``: one is enough to deny the request."""
        return sign_event(ApprovalRefused(
            signer=self.identity, tenant=self.tenant, nonce=secrets.token_hex(16),
            issued_at=self.clock(), request_id=request_id, root=root, reason=reason),
            self.signer)
