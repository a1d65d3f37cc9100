"""Another tenant's artifact id is answered exactly as an unknown one (issue 19): the same
reason and the same detail, for revocations and executions, and still a denial."""

from __future__ import annotations

import hashlib

from ledger.core.envelope import sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationRevoked
from ledger.core.execution_events import ExecutionRequested
from ledger.core.keys import KeyRing, Principal
from ledger.core.streams import Stream
from ledger.errors import Reason
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.outcomes import Outcome
from tests.factories import AUTHORITY, ENV, T0, seeded_signer
from tests.unit.test_engine import (
    AUTH_ID,
    CountingLimiter,
    ask,
    decision,
    execute,
    grant_of,
    permissive,
    ring,
)

OUTSIDER = seeded_signer("globex-revoker")
OPERATOR = seeded_signer("operator")


def engine() -> Engine:
    keys = KeyRing([*ring().principals(),
                    Principal("ops:globex", "globex", OUTSIDER.public_key,
                              frozenset({"revoker", "executor"})),
                    Principal("ops:root", "*", OPERATOR.public_key, frozenset({"revoker"}))])
    return Engine(authority=AUTHORITY, authority_identity=AUTH_ID, keyring=keys,
                  policy=permissive(), limiter=CountingLimiter(), limits=Limits(max_depth=3))


def outsider_revokes(eng: Engine, artifact_id: str, root: str, nonce: str) -> Outcome:
    event = AuthorizationRevoked(signer="ops:globex", tenant="globex", nonce=nonce,
                                 issued_at=T0, artifact_id=artifact_id, root=root,
                                 reason="probe")
    return eng.handle(Stream.REVOCATIONS, sign_event(event, OUTSIDER), T0)


def outsider_executes(eng: Engine, artifact_id: str, root: str, nonce: str) -> Outcome:
    event = ExecutionRequested(signer="ops:globex", tenant="globex", nonce=nonce,
                               issued_at=T0, artifact_id=artifact_id, root=root,
                               action="read", resource="db/orders/1", environment=ENV)
    return eng.handle(Stream.EXECUTIONS, sign_event(event, OUTSIDER), T0)


def denial_shape(outcome: Outcome) -> tuple[tuple[Reason, ...], str]:
    denial = decision(outcome)
    assert isinstance(denial, AuthorizationDenied) or not outcome.allow
    return outcome.reasons, getattr(denial, "detail", "")


def test_revoking_another_tenants_artifact_looks_like_revoking_an_unknown_one() -> None:
    eng = engine()
    granted = ask(eng)
    artifact_id, _ = grant_of(granted)
    unknown = hashlib.sha256(b"no such artifact").hexdigest()
    foreign = outsider_revokes(eng, artifact_id, granted.subject, "probe-nonce-00001")
    missing = outsider_revokes(eng, unknown, granted.subject, "probe-nonce-00002")
    assert not foreign.allow
    assert foreign.reasons == (Reason.ARTIFACT_INVALID,)
    assert denial_shape(foreign) == denial_shape(missing)
    # the check is not weakened: the artifact still works, and the operator (tenant *)
    # with the revoker role still may revoke it
    assert execute(eng, granted, granted.subject, "exec-nonce-00001").allow
    operator = AuthorizationRevoked(signer="ops:root", tenant="acme", nonce="op-nonce-0000001",
                                    issued_at=T0, artifact_id=artifact_id,
                                    root=granted.subject, reason="operator")
    assert eng.handle(Stream.REVOCATIONS, sign_event(operator, OPERATOR), T0).allow


def test_executing_under_another_tenants_artifact_looks_like_an_unknown_one() -> None:
    eng = engine()
    granted = ask(eng)
    artifact_id, _ = grant_of(granted)
    unknown = hashlib.sha256(b"no such artifact").hexdigest()
    foreign = outsider_executes(eng, artifact_id, granted.subject, "probe-exec-00001")
    missing = outsider_executes(eng, unknown, granted.subject, "probe-exec-00002")
    assert foreign.reasons == (Reason.ARTIFACT_INVALID,)
    assert (foreign.reasons, decision(foreign).detail) == (  # type: ignore[attr-defined]
        missing.reasons, decision(missing).detail)  # type: ignore[attr-defined]
