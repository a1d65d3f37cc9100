"""Builders for test events and keys. Deterministic: fixed seeds, fixed times."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from ledger.core.envelope import sign_event
from ledger.core.events import AuthorizationRequested, LineageRef, Scope, Window
from ledger.core.keys import KeyRing, Principal, Signer

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ENV = "sha256:" + hashlib.sha256(b"runtime image v1").hexdigest()
ENV2 = "sha256:" + hashlib.sha256(b"runtime image v2").hexdigest()


def seeded_signer(label: str) -> Signer:
    """A signer whose key is derived from ``label``: the same label, the same key."""
    seed = hashlib.sha256(f"govledger test key {label}".encode()).digest()
    return Signer.from_private_bytes(seed)


def ring_of(*entries: tuple[Signer, str, str, frozenset[str]]) -> KeyRing:
    return KeyRing(Principal(identity, tenant, signer.public_key, roles)
                   for signer, identity, tenant, roles in entries)


def request(signer: str = "agent:alice", tenant: str = "acme", nonce: str = "nonce-0000000001",
            actions: tuple[str, ...] = ("read",), resource: str = "db/orders/*",
            issued_at: datetime = T0, ttl: timedelta = timedelta(hours=1),
            environments: tuple[str, ...] = (ENV,), root: str | None = None,
            parent: str | None = None, single_use: bool = False,
            holder: str | None = None) -> AuthorizationRequested:
    return AuthorizationRequested(
        signer=signer, tenant=tenant, nonce=nonce, issued_at=issued_at,
        scope=Scope(actions=tuple(sorted(actions)), resource=resource),
        environments=tuple(sorted(environments)),
        window=Window(not_before=issued_at, not_after=issued_at + ttl),
        lineage=LineageRef(root=root, parent=parent), single_use=single_use, holder=holder)


ALICE = seeded_signer("alice")
MALLORY = seeded_signer("mallory")
AUTHORITY = seeded_signer("authority")


def default_ring() -> KeyRing:
    return ring_of((ALICE, "agent:alice", "acme", frozenset({"requester"})),
                   (AUTHORITY, "govledger:authority", "*", frozenset({"authority"})))


def signed_request(**kwargs: object) -> bytes:
    return sign_event(request(**kwargs), ALICE)  # type: ignore[arg-type]
