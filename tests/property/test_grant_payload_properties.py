"""The engine's directly written grant payload is the model's, byte for byte.

``processors.core.grants.grant_payload`` skips building and dumping the AuthorizationGranted
model; the published bytes (what is signed, hashed into the event id and logged) must not
change. Every field of the grant and its artifact is generated within the models' own
constraints, including the awkward ones: unicode governance strings, microsecond times,
optional lineage parents, empty and full policy id lists, with and without the governance
position and the shadow outcome (both omitted from the encoding when absent).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.core.envelope import payload_bytes, sign_event_with_id, sign_payload_with_id
from ledger.core.events import Artifact, AuthorizationGranted, Lineage, Scope, Shadow, Window
from ledger.errors import InvalidEvent
from processors.core.grants import grant_payload
from tests.factories import AUTHORITY

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
hexid = st.text("0123456789abcdef", min_size=64, max_size=64)
identity = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,20}", fullmatch=True)
tenant = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.just(UTC))
digest = hexid.map(lambda h: "sha256:" + h)
meta_value = st.one_of(st.text(max_size=40), st.integers(-(2**53) + 1, 2**53 - 1),
                       st.booleans())
policy_ids = st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,12}", fullmatch=True),
                      max_size=4).map(tuple)
shadows = st.one_of(st.none(), st.builds(Shadow, policy_digest=digest, allow=st.booleans(),
                                         policy_ids=policy_ids))
positions = st.one_of(st.none(), st.integers(0, 2**53 - 1))
governance = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True),
                             meta_value, max_size=5)


@st.composite
def artifacts(draw: st.DrawFn) -> Artifact:
    start = draw(times)
    root = draw(hexid)
    parent = draw(st.one_of(st.none(), hexid))
    return Artifact(
        request_id=draw(hexid), initiator=draw(identity), holder=draw(identity),
        tenant=draw(tenant),
        scope=Scope(actions=tuple(sorted(draw(st.sets(
            st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True), min_size=1,
            max_size=4)))), resource=draw(st.text(min_size=1, max_size=40))),
        environments=tuple(sorted(draw(st.sets(digest, min_size=1, max_size=3)))),
        window=Window(not_before=start,
                      not_after=start + draw(st.timedeltas(timedelta(microseconds=1),
                                                           timedelta(days=2)))),
        single_use=draw(st.booleans()), policy_digest=draw(digest),
        policy_ids=draw(policy_ids),
        lineage=Lineage(root=root, parent=parent,
                        depth=0 if parent is None else draw(st.integers(1, 64))),
        governance=draw(governance))


@SETTINGS
@given(artifacts(), identity, tenant, times, hexid, positions, shadows)
def test_grant_payload_is_the_models_encoding(artifact: Artifact, signer: str, tenant_: str,
                                              issued_at: datetime, request_id: str,
                                              position: int | None,
                                              shadow: Shadow | None) -> None:
    nonce = f"g-{request_id}"
    model = AuthorizationGranted(signer=signer, tenant=tenant_, nonce=nonce,
                                 issued_at=issued_at, request_id=request_id, artifact=artifact,
                                 governance=position, shadow=shadow)
    direct = grant_payload(signer=signer, tenant=tenant_, nonce=nonce, issued_at=issued_at,
                           request_id=request_id, artifact=artifact, governance=position,
                           shadow=shadow)
    assert direct == payload_bytes(model)
    assert outcome(lambda: sign_payload_with_id(AuthorizationGranted.KIND, direct,
                                                AUTHORITY)) == (
        outcome(lambda: sign_event_with_id(model, AUTHORITY)))


def outcome(sign: Callable[[], tuple[bytes, str]]) -> tuple[bytes, str] | str:
    """The signed envelope and id, or the refusal (a U+0000 in a string is not signable)."""
    try:
        return sign()
    except InvalidEvent as exc:
        return f"refused: {exc.reason}"


@SETTINGS
@given(artifacts(), times, st.sampled_from([None, timezone(timedelta(hours=2)),
                                            timezone(timedelta(hours=-5))]))
def test_a_time_the_model_refuses_is_refused_too(artifact: Artifact, issued_at: datetime,
                                                 zone: timezone | None) -> None:
    """Naive or non-UTC: the model refuses it, and the direct path does not read it as some
    other instant (a naive time would be taken as the host's local time)."""
    shifted = issued_at.replace(tzinfo=zone)
    with pytest.raises(ValidationError):
        AuthorizationGranted(signer="authority", tenant="acme", nonce="g-" + "0" * 16,
                             issued_at=shifted, request_id="0" * 64, artifact=artifact)
    with pytest.raises(InvalidEvent, match="UTC"):
        grant_payload(signer="authority", tenant="acme", nonce="g-" + "0" * 16,
                      issued_at=shifted, request_id="0" * 64, artifact=artifact)


@SETTINGS
@given(artifacts(), times, st.integers(max_value=-1))
def test_a_negative_governance_position_is_refused_as_the_model_refuses_it(
        artifact: Artifact, issued_at: datetime, position: int) -> None:
    with pytest.raises(ValidationError):
        AuthorizationGranted(signer="authority", tenant="acme", nonce="g-" + "0" * 16,
                             issued_at=issued_at, request_id="0" * 64, artifact=artifact,
                             governance=position)
    with pytest.raises(InvalidEvent, match="negative"):
        grant_payload(signer="authority", tenant="acme", nonce="g-" + "0" * 16,
                      issued_at=issued_at, request_id="0" * 64, artifact=artifact,
                      governance=position)
