"""Who may sign what: the one rule the sequencer and the bundle verifier share.

The ledger logs an event whose signature verifies under a key it knows, judged by signature
and kind only (never by a clock: key windows were judged by the processor on arrival).
Authority kinds (:data:`~ledger.core.events.AUTHORITY_KINDS`: decisions, verdicts,
acknowledgements, the policy and key registry) are signed only by a key with the
``authority`` role; every other kind only by a key without it (the authority decides, it
never asks, executes or revokes). :func:`check_signer_kind` is that rule;
:class:`SignerKeys` applies it to a bundle's leaves offline (ledger.log.proofs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.core.envelope import VerifiedEvent, parse_envelope, parse_payload, verify_envelope
from ledger.core.keys import KeyRing, Principal, key_id
from ledger.core.kinds import AUTHORITY_KINDS
from ledger.errors import BadSignature, ProofError, Reason, Rejected


def check_signer_kind(kind: str, principal: Principal) -> None:
    """Raise BadSignature(IDENTITY_MISMATCH) unless ``principal`` may sign events of ``kind``.

    Authority kinds (:data:`~ledger.core.events.AUTHORITY_KINDS`) only under a key with the
    ``authority`` role; every other kind only under a key without it: the authority decides
    and acknowledges, it never asks, executes or revokes, so its key on a request means the
    key is misused (or the event forged), and the ledger refuses it.
    """
    authority = "authority" in principal.roles
    if kind in AUTHORITY_KINDS and not authority:
        raise BadSignature(Reason.IDENTITY_MISMATCH,
                           f"{kind} signed by {principal.identity}, not by the authority")
    if kind not in AUTHORITY_KINDS and authority:
        raise BadSignature(Reason.IDENTITY_MISMATCH,
                           f"{kind} signed by the authority key of {principal.identity}")


def verify_loggable(data: bytes, keyring: KeyRing, now: datetime | None = None) -> VerifiedEvent:
    """The ledger's admission rule, shared by the sequencer (``now`` None: key windows are
    the processor's judgment at arrival, never the sequencer's clock) and the processor
    (``now``: its arrival time): the envelope verifies under a key of ``keyring``
    (:func:`~ledger.core.envelope.verify_envelope`) and that key may sign its kind
    (:func:`check_signer_kind`). So whatever the processor takes as verified input, the
    ledger logs. Raises Rejected."""
    verified = verify_envelope(data, keyring, now)
    check_signer_kind(verified.kind, verified.principal)
    return verified


@dataclass(frozen=True, slots=True)
class SignerKeys:
    """The keys a bundle's leaves must be signed with.

    ``authority``: raw public keys of the authority, trusted to sign authority kinds under
    whatever identity the event names (the key is the trust anchor, the name its label).
    ``keyring``: principals trusted for their own identity, tenant and roles (a principal
    with the ``authority`` role signs authority kinds too).
    """

    authority: frozenset[bytes] = frozenset()
    keyring: KeyRing | None = None

    @property
    def empty(self) -> bool:
        return not self.authority and (self.keyring is None or len(self.keyring) == 0)

    def check(self, leaf: bytes) -> str:
        """The leaf's event kind if a key given signed it and may sign that kind.

        Raises ProofError otherwise (unknown key, bad signature, wrong key for the kind).
        """
        try:
            parsed = parse_envelope(leaf)
            event = parse_payload(parsed.payload_type, parsed.payload)
            ring = self.keyring
            for public_key in self.authority:
                if key_id(public_key) == parsed.key_id:
                    ring = KeyRing([Principal(event.signer, "*", public_key,
                                              frozenset({"authority"}))])
            if ring is None or parsed.key_id not in ring:
                raise ProofError(f"leaf signer refused: {event.KIND} signed by key "
                                 f"{parsed.key_id[:16]}..., which is not among the keys given")
            verified = verify_envelope(leaf, ring, None)
            check_signer_kind(verified.kind, verified.principal)
        except Rejected as exc:
            raise ProofError(f"leaf signer refused: {exc}") from exc
        return verified.kind
