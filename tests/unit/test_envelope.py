"""Envelope verification: every reason code the foundation produces, one test each."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from ledger.core.canonical import canonical_bytes
from ledger.core.envelope import (
    MAX_ENVELOPE_BYTES,
    build_envelope,
    event_id,
    pae,
    payload_bytes,
    payload_type,
    sign_event,
    verify_envelope,
)
from ledger.core.keys import KeyRing, Principal
from ledger.errors import BadSignature, InvalidEvent, Reason, Rejected
from tests.factories import ALICE, AUTHORITY, MALLORY, T0, default_ring, request, signed_request

REQ_TYPE = payload_type("AuthorizationRequested")


def reason_of(data: bytes, ring: KeyRing | None = None, now=T0) -> Reason:
    with pytest.raises(Rejected) as info:
        verify_envelope(data, ring or default_ring(), now)
    return info.value.reason


def envelope_with_payload(raw: bytes, kind: str = REQ_TYPE) -> bytes:
    return build_envelope(kind, raw, ALICE)


def test_valid_request_verifies_and_keeps_exact_bytes() -> None:
    data = signed_request()
    verified = verify_envelope(data, default_ring(), T0)
    assert verified.envelope == data
    assert verified.event == request()
    assert verified.event_id == event_id(payload_bytes(request()))
    assert verified.kind == "AuthorizationRequested"


def test_pae_matches_dsse_spec_example() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b'{"payload":1}', b"\xff\xfe", b'{"a":NaN}',
    b'{"payload":"","payloadType":"x","signatures":[],"extra":1}',
])
def test_garbage_envelopes_are_malformed(data: bytes) -> None:
    assert reason_of(data) is Reason.MALFORMED


def test_duplicate_envelope_key_is_malformed() -> None:
    good = json.loads(signed_request())
    body, sigs = good["payload"], json.dumps(good["signatures"])
    data = (f'{{"payload":"{body}","payload":"{body}","payloadType":"{REQ_TYPE}",'
            f'"signatures":{sigs}}}').encode()
    assert reason_of(data) is Reason.MALFORMED


def test_oversized_envelope() -> None:
    assert reason_of(b" " * (MAX_ENVELOPE_BYTES + 1)) is Reason.OVERSIZED


def test_non_canonical_envelope_whitespace() -> None:
    data = json.dumps(json.loads(signed_request()), indent=1).encode()
    assert reason_of(data) is Reason.NON_CANONICAL


def test_unknown_payload_type_is_unsupported_version() -> None:
    data = envelope_with_payload(payload_bytes(request()),
                                 "application/vnd.govledger.authorization-requested.v2+json")
    assert reason_of(data) is Reason.UNSUPPORTED_VERSION


def test_missing_signature() -> None:
    good = json.loads(signed_request())
    good["signatures"] = []
    assert reason_of(canonical_bytes(good)) is Reason.SIGNATURE_MISSING


def test_two_signatures_are_refused() -> None:
    good = json.loads(signed_request())
    good["signatures"] = good["signatures"] * 2
    assert reason_of(canonical_bytes(good)) is Reason.MALFORMED


def test_unknown_key() -> None:
    data = sign_event(request(signer="agent:mallory"), MALLORY)
    assert reason_of(data) is Reason.KEY_UNKNOWN


def test_signature_by_other_key_under_known_keyid_is_invalid() -> None:
    good = json.loads(signed_request())
    forged = json.loads(sign_event(request(), MALLORY))
    good["signatures"][0]["sig"] = forged["signatures"][0]["sig"]
    assert reason_of(canonical_bytes(good)) is Reason.SIGNATURE_INVALID


def test_revoked_key_after_revocation_time_only() -> None:
    ring = default_ring()
    ring.revoke(ALICE.key_id, T0 + timedelta(minutes=5))
    data = signed_request()
    assert verify_envelope(data, ring, T0).event_id
    assert reason_of(data, ring, T0 + timedelta(minutes=5)) is Reason.KEY_REVOKED


def test_key_outside_validity_window() -> None:
    ring = KeyRing([Principal("agent:alice", "acme", ALICE.public_key,
                              not_before=T0, not_after=T0 + timedelta(days=1))])
    data = signed_request()
    assert reason_of(data, ring, T0 - timedelta(seconds=1)) is Reason.KEY_REVOKED
    assert reason_of(data, ring, T0 + timedelta(days=1)) is Reason.KEY_REVOKED
    assert verify_envelope(data, ring, T0).kind == "AuthorizationRequested"


def test_payload_with_duplicate_key_is_malformed_even_if_signed() -> None:
    raw = payload_bytes(request())
    raw = raw[:-1] + b',"tenant":"acme"}'
    assert reason_of(envelope_with_payload(raw)) is Reason.MALFORMED


@pytest.mark.parametrize("bad", [
    b'{"n":NaN}', b'{"n":Infinity}', b'{"n":9007199254740992}', b'{"s":"\\ud800"}',
    b'{"s":"\\u0000"}', b'[' * 40 + b']' * 40, b'{"n":1e999}',
])
def test_strict_payload_parsing(bad: bytes) -> None:
    assert reason_of(envelope_with_payload(bad)) is Reason.MALFORMED


def test_schema_violation_is_malformed() -> None:
    doc = json.loads(payload_bytes(request()))
    doc["scope"]["actions"] = ["write", "read"]  # unsorted set
    assert reason_of(envelope_with_payload(canonical_bytes(doc))) is Reason.MALFORMED
    doc = json.loads(payload_bytes(request()))
    doc["admin"] = True  # extra field
    assert reason_of(envelope_with_payload(canonical_bytes(doc))) is Reason.MALFORMED


def test_request_payload_under_decision_type_is_malformed() -> None:
    data = envelope_with_payload(payload_bytes(request()),
                                 payload_type("AuthorizationGranted"))
    assert reason_of(data) is Reason.MALFORMED


@pytest.mark.parametrize("mutate", [
    lambda b: b.replace(b'"kind"', b' "kind"', 1),                       # whitespace
    lambda b: b.replace(b"12:00:00Z", b"12:00:00+00:00", 1),              # other time form
    lambda b: b.replace(b'"single_use":false,', b"", 1),                 # default omitted
    lambda b: b.replace(b'"context":{},', b"", 1) + b"",                  # default omitted
])
def test_re_encoded_payload_is_non_canonical(mutate) -> None:
    raw = mutate(payload_bytes(request()))
    assert raw != payload_bytes(request())
    assert reason_of(envelope_with_payload(raw)) is Reason.NON_CANONICAL


def test_identity_mismatch() -> None:
    data = sign_event(request(signer="agent:bob"), ALICE)
    assert reason_of(data) is Reason.IDENTITY_MISMATCH


def test_tenant_mismatch() -> None:
    data = sign_event(request(tenant="globex"), ALICE)
    assert reason_of(data) is Reason.TENANT_MISMATCH


def test_wildcard_tenant_principal_signs_for_any_tenant() -> None:
    data = sign_event(request(signer="govledger:authority", tenant="globex"), AUTHORITY)
    assert verify_envelope(data, default_ring(), T0).event.tenant == "globex"


def test_non_standard_base64_is_malformed() -> None:
    good = json.loads(signed_request())
    good["payload"] = base64.urlsafe_b64encode(base64.b64decode(good["payload"])).decode()
    good["payload"] = good["payload"].rstrip("=")
    assert reason_of(canonical_bytes(good)) is Reason.MALFORMED


def test_errors_are_typed() -> None:
    with pytest.raises(InvalidEvent):
        verify_envelope(b"{}", default_ring(), T0)
    with pytest.raises(BadSignature):
        verify_envelope(sign_event(request(signer="agent:mallory"), MALLORY), default_ring(), T0)


def test_signing_refuses_what_verification_would_refuse() -> None:
    event = request().model_copy(update={"context": {"note": "a\x00b"}})
    with pytest.raises(InvalidEvent) as info:
        sign_event(event, ALICE)
    assert info.value.reason is Reason.MALFORMED
    unsafe = request().model_copy(update={"context": {"amount": 2**53}})  # beyond I-JSON
    with pytest.raises(InvalidEvent) as info:
        sign_event(unsafe, ALICE)
    assert info.value.reason is Reason.MALFORMED


def test_verify_stored_authenticates_what_it_returns() -> None:
    """The journal-restore path skips encoding checks but never the signature or signer."""
    from ledger.core.envelope import read_stored, verify_stored
    data = signed_request()
    event, event_id = verify_stored(data, default_ring(), "agent:alice")
    verified = verify_envelope(data, default_ring(), T0)
    assert (event, event_id) == (verified.event, verified.event_id)
    stored = read_stored(data)
    assert stored is not None and stored.fields["nonce"] == verified.event.nonce

    doc = json.loads(data)
    payload = base64.b64decode(doc["payload"]).replace(b"db/orders/*", b"db/users/**")
    tampered = json.dumps({**doc, "payload": base64.b64encode(payload).decode()}).encode()
    with pytest.raises(BadSignature) as caught:
        verify_stored(tampered, default_ring(), "agent:alice")
    assert caught.value.reason is Reason.SIGNATURE_INVALID
    with pytest.raises(BadSignature) as caught:
        verify_stored(data, default_ring(), "govledger:authority")  # not the expected signer
    assert caught.value.reason is Reason.IDENTITY_MISMATCH
    with pytest.raises(BadSignature) as caught:
        verify_stored(sign_event(request(), MALLORY), default_ring(), "agent:alice")
    assert caught.value.reason is Reason.KEY_UNKNOWN
    with pytest.raises(InvalidEvent):
        verify_stored(b"not json", default_ring(), "agent:alice")
    assert read_stored(b"not json") is None
    assert read_stored(b'{"payloadType":"text/plain","payload":""}') is None
