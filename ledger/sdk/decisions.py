"""A verified decision, and the one check every SDK transport applies before handing it out.

:func:`verify_decision` is the SDK's contract whatever carried the bytes (Kafka or the HTTP
API): the envelope verifies (DSSE, Ed25519 over the received bytes, canonical payload)
against the authority keyring, its signer has the ``authority`` role, and, when the caller
knows which request or execution it asked about, the decision is about exactly that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.core.envelope import VerifiedEvent, verify_envelope
from ledger.core.events import AuthorizationGranted, Event
from ledger.core.keys import KeyRing
from ledger.core.kinds import answer_of
from ledger.errors import Reason, Rejected


@dataclass(frozen=True, slots=True)
class Decision:
    """A verified decision or verdict about ``subject_id``."""

    subject_id: str
    verified: VerifiedEvent

    @property
    def event(self) -> Event:
        return self.verified.event

    @property
    def envelope(self) -> bytes:
        return self.verified.envelope

    @property
    def allow(self) -> bool:
        answer = answer_of(self.event)
        return answer is not None and answer[1]

    @property
    def reasons(self) -> tuple[str, ...]:
        answer = answer_of(self.event)
        return () if answer is None else tuple(r.value for r in answer[2])

    @property
    def artifact_id(self) -> str | None:
        """For a grant: the artifact id (the grant's event id)."""
        return self.verified.event_id if isinstance(self.event, AuthorizationGranted) else None


def subject_of(event: Event) -> str | None:
    """The request, execution, revocation or governance event id a decision, verdict or
    acknowledgement is about."""
    answer = answer_of(event)
    return None if answer is None else answer[0]


def verify_decision(raw: bytes, authority: KeyRing, now: datetime,
                    subject_id: str | None = None) -> Decision | None:
    """The verified decision in ``raw``; None for an authority event that decides nothing
    (one that answers no subject) when no ``subject_id`` is asked for.

    Raises Rejected: the envelope does not verify against ``authority``, its signer lacks
    the ``authority`` role, or (``subject_id`` given) it is not a decision about it.
    """
    verified = verify_envelope(raw, authority, now)
    if "authority" not in verified.principal.roles:
        raise Rejected(Reason.IDENTITY_MISMATCH, "decision not signed by an authority key")
    subject = subject_of(verified.event)
    if subject_id is not None and subject != subject_id:
        raise Rejected(Reason.IDENTITY_MISMATCH,
                       f"a {verified.kind} about {str(subject)[:16]}, not {subject_id[:16]}")
    return None if subject is None else Decision(subject, verified)
