"""ledger/core/signers.py: which keys may sign which kinds, the rule the sequencer and the bundle
verifier share."""

from __future__ import annotations

import pytest

from ledger.core.keys import Principal
from ledger.core.kinds import AUTHORITY_KINDS, BY_KIND
from ledger.core.signers import check_signer_kind
from ledger.errors import BadSignature, Reason
from tests.factories import ALICE, AUTHORITY

AGENT = Principal("agent:alice", "acme", ALICE.public_key, frozenset({"requester", "executor"}))
THE_AUTHORITY = Principal("govledger:authority", "*", AUTHORITY.public_key,
                          frozenset({"authority"}))


def test_authority_kinds_are_known_kinds_and_include_every_decision() -> None:
    assert set(BY_KIND) >= AUTHORITY_KINDS
    assert {"AuthorizationGranted", "AuthorizationDenied", "RevocationApplied",
            "ExecutionAllowed", "ExecutionRefused", "GovernanceApplied"} <= AUTHORITY_KINDS
    assert "PolicyPublished" not in AUTHORITY_KINDS  # an admin signs it, never the authority
    assert "AuthorizationRequested" not in AUTHORITY_KINDS


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_each_kind_has_exactly_one_kind_of_signer(kind: str) -> None:
    allowed, refused = ((THE_AUTHORITY, AGENT) if kind in AUTHORITY_KINDS
                        else (AGENT, THE_AUTHORITY))
    check_signer_kind(kind, allowed)
    with pytest.raises(BadSignature) as info:
        check_signer_kind(kind, refused)
    assert info.value.reason is Reason.IDENTITY_MISMATCH
