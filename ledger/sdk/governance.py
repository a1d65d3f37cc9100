"""Signed governance events, built for an admin (docs/governance.md).

:class:`Admin` signs with an admin key under the admin's identity; each method returns the
envelope bytes to submit (``Client.send_raw`` on the governance topic, or ``POST /v1/events``
of the HTTP API, which answers with the authority's GovernanceApplied or its denial).
Nonces are random; ``issued_at`` is the admin's clock (the processor refuses an event older
than its request age or from further ahead than its clock skew).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.core.envelope import sign_event
from ledger.core.events import Event
from ledger.core.governance_events import (
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
from ledger.core.keys import Signer, key_id


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Admin:
    """An admin principal: its identity, the tenant it governs (``*``: the operator), and
    its signing key."""

    identity: str
    tenant: str
    signer: Signer
    clock: Callable[[], datetime] = _now

    def _sign(self, event_type: type[Event], tenant: str | None = None,
              **fields: object) -> bytes:
        event = event_type(signer=self.identity, tenant=tenant or self.tenant,
                           nonce=secrets.token_hex(16), issued_at=self.clock(), **fields)
        return sign_event(event, self.signer)

    def register(self, identity: str, public_key: bytes, roles: tuple[str, ...], *,
                 tenant: str | None = None, not_before: datetime | None = None,
                 not_after: datetime | None = None, reason: str = "") -> bytes:
        return self._sign(PrincipalRegistered, tenant, identity=identity,
                          public_key=base64.b64encode(public_key).decode(),
                          key_id=key_id(public_key), roles=tuple(sorted(set(roles))),
                          not_before=not_before, not_after=not_after, reason=reason)

    def revoke(self, public_key_id: str, *, tenant: str | None = None,
               reason: str = "") -> bytes:
        return self._sign(PrincipalRevoked, tenant, key_id=public_key_id, reason=reason)

    def suspend(self, identity: str, *, tenant: str | None = None, reason: str = "") -> bytes:
        return self._sign(PrincipalSuspended, tenant, identity=identity, reason=reason)

    def resume(self, identity: str, *, tenant: str | None = None, reason: str = "") -> bytes:
        return self._sign(PrincipalResumed, tenant, identity=identity, reason=reason)

    def suspend_tenant(self, tenant: str, *, reason: str = "") -> bytes:
        return self._sign(TenantSuspended, tenant, reason=reason)

    def resume_tenant(self, tenant: str, *, reason: str = "") -> bytes:
        return self._sign(TenantResumed, tenant, reason=reason)

    def publish_policy(self, files: Mapping[str, str], digest: str, version: str, *,
                       shadow: bool = False, reason: str = "") -> bytes:
        return self._sign(PolicyPublished, "*", files=dict(files), policy_digest=digest,
                          version=version, mode="shadow" if shadow else "enforce",
                          reason=reason)

    def promote_policy(self, digest: str, *, reason: str = "") -> bytes:
        return self._sign(PolicyPromoted, "*", policy_digest=digest, reason=reason)

    def configure(self, quorum: int, window_s: int, *, reason: str = "") -> bytes:
        return self._sign(GovernanceConfigured, "*", quorum=quorum, window_s=window_s,
                          reason=reason)

    def approve(self, governance_id: str, *, tenant: str | None = None,
                reason: str = "") -> bytes:
        return self._sign(GovernanceApproved, tenant, governance_id=governance_id,
                          reason=reason)
