"""Hypothesis properties of signing and verification."""

from __future__ import annotations

import base64
import json
import string
from datetime import timedelta

import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.core.canonical import canonical_bytes, canonical_bytes_of_safe
from ledger.core.envelope import (
    build_envelope,
    parse_payload,
    payload_bytes,
    payload_type,
    sign_event,
    verify_envelope,
)
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationRequested,
    LineageRef,
    Scope,
    Window,
)
from ledger.errors import Reason, Rejected
from tests.factories import ALICE, AUTHORITY, ENV, ENV2, T0, default_ring

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
action = st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True)
safe_text = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                           blacklist_categories=("Cs",)), max_size=20)
meta_value = st.one_of(safe_text, st.integers(-(2**53) + 1, 2**53 - 1), st.booleans())


@st.composite
def requests(draw: st.DrawFn) -> AuthorizationRequested:
    issued = T0 + timedelta(seconds=draw(st.integers(0, 10**8)),
                            microseconds=draw(st.integers(0, 999_999)))
    has_parent = draw(st.booleans())
    return AuthorizationRequested(
        signer="agent:alice", tenant="acme",
        nonce=draw(st.text(string.ascii_letters + string.digits + "_-", min_size=16,
                           max_size=40)),
        issued_at=issued,
        scope=Scope(actions=tuple(sorted(draw(st.sets(action, min_size=1, max_size=5)))),
                    resource=draw(st.text(min_size=1, max_size=40).filter(
                        lambda s: "\x00" not in s))),
        environments=tuple(sorted(draw(st.sets(st.sampled_from([ENV, ENV2]), min_size=1)))),
        window=Window(not_before=issued,
                      not_after=issued + timedelta(seconds=draw(st.integers(1, 10**6)))),
        lineage=LineageRef(root=draw(hex64), parent=draw(hex64)) if has_parent else LineageRef(),
        single_use=draw(st.booleans()),
        context=draw(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                                     meta_value, max_size=4)),
    )


def verifies(data: bytes) -> Reason | None:
    try:
        verify_envelope(data, default_ring(), T0)
    except Rejected as exc:
        return exc.reason
    return None


@SETTINGS
@given(requests())
def test_sign_verify_round_trip(event: AuthorizationRequested) -> None:
    verified = verify_envelope(sign_event(event, ALICE), default_ring(), T0)
    assert verified.event == event
    assert parse_payload(payload_type(event.KIND), payload_bytes(event)) == event


@SETTINGS
@given(requests())
def test_payload_encoding_is_rfc8785(event: AuthorizationRequested) -> None:
    value = event.model_dump(mode="json")
    assert canonical_bytes_of_safe(value) == rfc8785.dumps(value)


@SETTINGS
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1),
              st.text(), st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20))
def test_canonical_bytes_agree_with_reference(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        return  # e.g. lone surrogates: both refuse, checked elsewhere
    assert canonical_bytes(value) == expected


@SETTINGS
@given(requests(), st.sampled_from(["payload", "sig", "payloadType"]), st.data())
def test_any_single_bit_flip_is_rejected(event: AuthorizationRequested, field: str,
                                         data: st.DataObject) -> None:
    envelope = json.loads(sign_event(event, ALICE))
    if field == "payloadType":
        raw = bytearray(envelope["payloadType"].encode())
    elif field == "payload":
        raw = bytearray(base64.b64decode(envelope["payload"]))
    else:
        raw = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    if field == "payloadType":
        envelope["payloadType"] = bytes(raw).decode("utf-8", "replace")
    elif field == "payload":
        envelope["payload"] = base64.b64encode(bytes(raw)).decode()
    else:
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    assert verifies(canonical_bytes(envelope)) is not None


@SETTINGS
@given(requests(), st.sampled_from(["indent", "reorder", "escape", "spaces"]))
def test_re_encoded_payload_is_never_accepted(event: AuthorizationRequested, how: str) -> None:
    doc = event.model_dump(mode="json")
    if how == "indent":
        raw = json.dumps(doc, indent=2, sort_keys=True).encode()
    elif how == "reorder":
        raw = json.dumps(dict(reversed(sorted(doc.items()))), separators=(",", ":")).encode()
    elif how == "escape":
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        raw = raw.replace(b'"kind"', b'"\\u006bind"')
    else:
        raw = json.dumps(doc, sort_keys=True).encode()
    # Signed by the right key: the only thing wrong is the encoding.
    resigned = build_envelope(payload_type(event.KIND), raw, ALICE)
    assert verifies(resigned) in {Reason.NON_CANONICAL, Reason.MALFORMED}
    # Re-encoded under the original signature: the signature no longer matches.
    original = json.loads(sign_event(event, ALICE))
    original["payload"] = base64.b64encode(raw).decode()
    assert verifies(canonical_bytes(original)) is Reason.SIGNATURE_INVALID


@SETTINGS
@given(requests())
def test_decision_envelope_never_verifies_as_request(event: AuthorizationRequested) -> None:
    denial = AuthorizationDenied(signer="govledger:authority", tenant="acme",
                                 nonce="authority-nonce-1", issued_at=T0,
                                 request_id="ab" * 32, reasons=(Reason.POLICY_DENY,))
    envelope = json.loads(sign_event(denial, AUTHORITY))
    envelope["payloadType"] = payload_type("AuthorizationRequested")
    assert verifies(canonical_bytes(envelope)) is Reason.SIGNATURE_INVALID
    # and a request's signature moved onto a decision type fails the same way
    request_env = json.loads(sign_event(event, ALICE))
    request_env["payloadType"] = payload_type("AuthorizationGranted")
    assert verifies(canonical_bytes(request_env)) is Reason.SIGNATURE_INVALID
