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


# -- the fast envelope parse agrees with the full one -----------------------------------------

def _outcome_of(parse: object, data: bytes) -> object:
    try:
        return parse(data)  # type: ignore[operator]
    except Rejected as exc:
        return (type(exc).__name__, exc.reason)


def request_for_fast_path() -> AuthorizationRequested:
    return AuthorizationRequested(
        signer="agent:alice", tenant="acme", nonce="nonce-fast-00001", issued_at=T0,
        scope=Scope(actions=("read",), resource="db/orders/*"), environments=(ENV,),
        window=Window(not_before=T0, not_after=T0 + timedelta(hours=1)),
        lineage=LineageRef())


b64ish = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=24)
piece = st.one_of(b64ish, st.text(max_size=6))
valid_b64 = st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode("ascii"))
b64_field = st.one_of(valid_b64, valid_b64, piece)
tricky = st.text(alphabet='ab0u:-.\\\\\\"/\x01\u00e9\ud800 ', min_size=1, max_size=8)
# near misses: characters the fast path allows, plus the two that need JSON escaping
near = st.text(alphabet='aB0+/=:.-\\"', min_size=1, max_size=6)
keyid_field = st.one_of(st.text("abc123:.-", min_size=1, max_size=8), tricky, near, piece)
kind_field = st.one_of(st.just(payload_type("AuthorizationRequested")),
                       st.just(payload_type("AuthorizationDenied")), tricky, piece)


def _envelope_text(body: str, kind: str, keyid: str, sig: str) -> bytes:
    return (f'{{"payload":"{body}","payloadType":"{kind}",'
            f'"signatures":[{{"keyid":"{keyid}","sig":"{sig}"}}]}}').encode("utf-8",
                                                                           "surrogatepass")


MUTATIONS = [lambda b: b, lambda b: b.replace(b'=="', b'="'),
             lambda b: b.replace(b'"}]}', b'" }]}'), lambda b: b.replace(b'"sig":"', b'"sig":"A'),
             lambda b: b + b" ", lambda b: b.replace(b'payload"', b'payloa\\u0064"')]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(
    st.binary(max_size=40),
    *[st.builds(_envelope_text, st.one_of(valid_b64, valid_b64, valid_b64, near, piece),
                st.one_of(kind_field, near, st.just(payload_type("AuthorizationRequested"))),
                st.one_of(keyid_field, near, near),
                st.one_of(valid_b64, valid_b64, valid_b64, near, piece))] * 3,
    st.builds(lambda mutate: mutate(sign_event(request_for_fast_path(), ALICE)),
              st.sampled_from(MUTATIONS))))
def test_fast_envelope_parse_agrees_with_the_full_parse(data: bytes) -> None:
    """Every input: the same ParsedEnvelope, or the same error class and reason."""
    from ledger.core.envelope import _parse_envelope_full, parse_envelope
    assert _outcome_of(parse_envelope, data) == _outcome_of(_parse_envelope_full, data)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["payload", "payloadType", "keyid", "sig"]), value=near)
def test_one_near_miss_field_is_parsed_as_the_full_parse_does(name: str, value: str) -> None:
    """A well-formed envelope with one field swapped for a near miss (an escape, a quote, a
    padding sign in the wrong place): the fast path must not accept what the full parse
    reads differently."""
    from ledger.core.envelope import _parse_envelope_full, parse_envelope
    fields = {"payload": "AAAA", "payloadType": payload_type("AuthorizationRequested"),
              "keyid": "k1", "sig": "AAAA", name: value}
    data = _envelope_text(fields["payload"], fields["payloadType"], fields["keyid"],
                          fields["sig"])
    assert _outcome_of(parse_envelope, data) == _outcome_of(_parse_envelope_full, data)


@SETTINGS
@given(text=b64ish)
def test_plain_base64_decoding_agrees_with_the_strict_decoder(text: str) -> None:
    from ledger.core.envelope import _plain_b64, b64decode_strict
    if not text.rstrip("=").count("=") and text.count("=") <= 2:  # the regex's shape
        try:
            expected: bytes | None = b64decode_strict(text, "x")
        except Rejected:
            expected = None
        assert _plain_b64(text.encode("ascii")) == expected


# -- the fast payload parse agrees with the full one ------------------------------------------

SNIPPETS = [b'"nonce":"x",', b',"nonce":"nonce-fast-00001"', b"NaN", b"1e400", b"9007199254740993",
            b"1.0", b" ", b"\\u0000", b"\\ud800", b"\\u0061", b"\xef\xbb\xbf", b"\xff", b"{", b"[",
            b'"extra":1,', b"null", b"true", b'"', b"\\", b"\x00", b"[[[[[[[[[[[[[[[[[[[["]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=st.integers(min_value=0, max_value=10_000), cut=st.integers(0, 4),
       snippet=st.sampled_from(SNIPPETS), kind=st.sampled_from(["AuthorizationRequested",
                                                                "AuthorizationDenied"]))
def test_fast_payload_parse_agrees_with_the_full_parse(at: int, cut: int, snippet: bytes,
                                                       kind: str) -> None:
    """A canonical request payload with a near miss spliced in (a duplicate key, NaN, a big
    integer, an escape, a BOM, bad UTF-8, deep nesting...): the same event, or the same error
    class and reason, with and without the fast path."""
    from ledger.core.envelope import PAYLOAD_TYPES, _parse_payload_full, parse_payload
    payload = payload_bytes(request_for_fast_path())
    at %= len(payload) + 1
    data = payload[:at] + snippet + payload[at + cut:]
    kind_type = payload_type(kind)
    fast = _outcome_of(lambda d: parse_payload(kind_type, d), data)
    full = _outcome_of(lambda d: _parse_payload_full(PAYLOAD_TYPES[kind_type], d), data)
    assert fast == full


def test_the_fast_payload_parse_is_taken_and_the_full_one_still_refuses() -> None:
    """The canonical payload parses to its event on both paths; a duplicate key that the
    model alone would read (last one wins) is still MALFORMED on the fast path."""
    from ledger.core.envelope import parse_payload
    event = request_for_fast_path()
    payload = payload_bytes(event)
    kind = payload_type("AuthorizationRequested")
    assert parse_payload(kind, payload) == event
    duplicated = payload.replace(b'"nonce":', b'"nonce":"nonce-other-0001","nonce":', 1)
    assert _outcome_of(lambda d: parse_payload(kind, d), duplicated) == (
        "InvalidEvent", Reason.MALFORMED)
    # Canonical, and valid for the model, yet refused by the strict parse: the fast path's
    # screen must send these to it.
    for context in ({"n": 2**60}, {"s": "a\x00b"}):
        fields = json.loads(payload)
        fields["context"] = context
        data = canonical_bytes_of_safe(fields)
        assert payload_bytes(type(event).model_validate_json(data)) == data
        assert _outcome_of(lambda d: parse_payload(kind, d), data) == (
            "InvalidEvent", Reason.MALFORMED)


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from([b"0", b"9", b"5", b"a", b"/", b":", b"\xff"]),
             max_size=60).map(b"".join),
    st.builds(lambda head, run, tail: head + b"7" * run + tail, st.binary(max_size=8),
              st.integers(13, 18), st.binary(max_size=8))))
def test_the_digit_run_screen_is_the_regex(data: bytes) -> None:
    """``_has_long_digit_run`` finds exactly what ``[0-9]{16}`` finds."""
    import re

    from ledger.core.envelope import _has_long_digit_run
    assert _has_long_digit_run(data) == bool(re.search(rb"[0-9]{16}", data))
    assert _has_long_digit_run(data + b"1" * 16)
