"""DSSE envelopes over RFC 8785 canonical payloads, and their verification.

Envelope (DSSE v1, https://github.com/secure-systems-lab/dsse/blob/master/envelope.md)::

    {"payload":"<base64 payload bytes>","payloadType":"<type>",
     "signatures":[{"keyid":"<hex sha256 of the public key>","sig":"<base64 Ed25519 sig>"}]}

* ``payloadType`` = ``application/vnd.govledger.<kind-slug>.v1+json``; it is signed, so a
  decision signature can never verify as a request (domain separation).
* The signature is Ed25519 over the DSSE pre-authentication encoding (protocol.md)::

      PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

  with LEN the ASCII decimal byte length, over the *received* payload bytes.
* govledger v1 rules on top of DSSE: exactly one signature; ``keyid`` required; base64 is
  the standard alphabet with padding; the envelope bytes themselves are RFC 8785 canonical
  (so one event has one leaf encoding); the payload is exactly the RFC 8785 encoding of the
  event model. Event id = lowercase hex SHA-256 of the payload bytes.

Verification steps (STYLE.md section 4), each failure a typed ``Rejected`` with one reason:

1. parse the envelope strictly: OVERSIZED, MALFORMED, NON_CANONICAL, UNSUPPORTED_VERSION,
   SIGNATURE_MISSING;
2. look up the key id: KEY_UNKNOWN;
3. verify Ed25519 over PAE of the received bytes: SIGNATURE_INVALID; then the key must be
   in force at arrival time: KEY_REVOKED;
4. parse the payload strictly: OVERSIZED, MALFORMED;
5. only now build the model: MALFORMED; and require the canonical encoding: NON_CANONICAL;
6. bind the signer: the payload's ``signer``/``tenant`` must be the key's principal:
   IDENTITY_MISMATCH, TENANT_MISMATCH (a principal of tenant ``*`` may sign for any tenant).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Final

import pydantic

from ledger.core.canonical import (
    DEFAULT_MAX_DEPTH,
    JsonValue,
    as_list,
    as_object,
    canonical_bytes_of_safe,
    parse_strict,
)
from ledger.core.events import Event
from ledger.core.keys import KeyRing, Principal, Signer, verify_signature
from ledger.core.kinds import BY_KIND, EVENT_TYPES
from ledger.errors import BadSignature, InvalidEvent, Reason

MAX_PAYLOAD_BYTES: Final = 128 * 1024
MAX_ENVELOPE_BYTES: Final = MAX_PAYLOAD_BYTES * 4 // 3 + 1024
TYPE_PREFIX: Final = "application/vnd.govledger."
_TYPE_RE = re.compile(r"^application/vnd\.govledger\.([a-z-]+)\.v([0-9]+)\+json$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
# A run of 16 ASCII digits, found as a run of 16 zeros once every digit is mapped to "0"
# (one translate and one find: ~2 us on a grant, where the regex [0-9]{16} takes ~14 us).
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_SIXTEEN_ZEROS = b"0" * 16


def _has_long_digit_run(data: bytes) -> bool:
    """True if ``data`` holds 16 ASCII digits in a row (what ``[0-9]{16}`` finds)."""
    return _SIXTEEN_ZEROS in data.translate(_DIGITS_TO_ZERO)

PAYLOAD_TYPES: Final[dict[str, type[Event]]] = {
    f"{TYPE_PREFIX}{cls.SLUG}.v1+json": cls for cls in EVENT_TYPES
}


def payload_type(kind: str) -> str:
    """The DSSE payloadType of an event kind, e.g. ``AuthorizationRequested``."""
    return f"{TYPE_PREFIX}{BY_KIND[kind].SLUG}.v1+json"


def pae(payload_type_: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type_.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def event_id(payload: bytes) -> str:
    """Event id: lowercase hex SHA-256 of the exact payload bytes."""
    return hashlib.sha256(payload).hexdigest()


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 with padding, nothing else. Raises InvalidEvent(MALFORMED)."""
    if not _B64_RE.match(text) or len(text) % 4:
        raise InvalidEvent(Reason.MALFORMED, f"{what} is not standard padded base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise InvalidEvent(Reason.MALFORMED, f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidEvent(Reason.MALFORMED, f"{what} has non-zero padding bits")
    return raw


_B64_VALUE = {c: i for i, c in enumerate(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _plain_b64(text: bytes) -> bytes | None:
    """:func:`b64decode_strict` for text already known to be ``[A-Za-z0-9+/]*={0,2}``;
    None where it would raise (length, or non-zero bits under the padding)."""
    if len(text) % 4:
        return None
    pad = len(text) - len(text.rstrip(b"="))
    if pad and _B64_VALUE[text[-pad - 1]] & (0x0F if pad == 2 else 0x03):
        return None
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return None


def payload_bytes(event: Event) -> bytes:
    """The one canonical payload encoding of ``event``."""
    return canonical_bytes_of_safe(event.model_dump(mode="json"))


def build_envelope(payload_type_: str, payload: bytes, signer: Signer) -> bytes:
    """Sign ``payload`` under ``payload_type_`` and return canonical envelope bytes."""
    signature = signer.sign(pae(payload_type_, payload))
    return _envelope_bytes(payload_type_, base64.b64encode(payload).decode("ascii"),
                           signer.key_id, base64.b64encode(signature).decode("ascii"))


def _envelope_bytes(kind: str, body: str, keyid: str, sig: str) -> bytes:
    """The RFC 8785 form of a one-signature envelope (keys in sorted order)."""
    return (f'{{"payload":{encode_basestring(body)},"payloadType":{encode_basestring(kind)},'
            f'"signatures":[{{"keyid":{encode_basestring(keyid)},'
            f'"sig":{encode_basestring(sig)}}}]}}').encode()


def sign_event(event: Event, signer: Signer) -> bytes:
    """Envelope bytes for ``event`` signed by ``signer``. Raises InvalidEvent (see below)."""
    return sign_event_with_id(event, signer)[0]


def sign_event_with_id(event: Event, signer: Signer) -> tuple[bytes, str]:
    """Envelope bytes and event id of ``event`` signed by ``signer``.

    Never signs what a verifier would refuse: the payload goes through the same strict
    parse first (a U+0000 in a string, an oversized payload). Raises InvalidEvent.
    """
    payload = payload_bytes(event)
    _check_signable(payload)
    return build_envelope(payload_type(event.KIND), payload, signer), event_id(payload)


def sign_payload_with_id(kind: str, payload: bytes, signer: Signer) -> tuple[bytes, str]:
    """:func:`sign_event_with_id` for a payload already encoded as :func:`payload_bytes`
    would encode an event of ``kind`` (e.g. processors.core.grants.grant_payload). Raises
    InvalidEvent on what a verifier would refuse, as :func:`sign_event_with_id`."""
    _check_signable(payload)
    return build_envelope(payload_type(kind), payload, signer), event_id(payload)


def _check_signable(payload: bytes) -> None:
    """What :func:`parse_payload` would refuse in bytes we encoded ourselves.

    ``payload_bytes`` cannot produce invalid JSON, duplicate keys, non-finite numbers or lone
    surrogates (the UTF-8 encode raises); it writes ``\\u`` only to escape a control
    character, nesting is at most the number of brackets, and an integer outside
    +-(2**53-1) needs 16 digits in a row. So only the size needs a look unless a ``\\u``
    escape (a U+0000 must be refused), deep nesting or a long digit run is possible: then the
    full strict parse decides.
    """
    if _strict_parse_could_refuse(payload):
        parse_strict(payload, max_bytes=MAX_PAYLOAD_BYTES)


def _strict_parse_could_refuse(payload: bytes) -> bool:
    """False only if :func:`parse_strict` accepts ``payload`` *provided* it is exactly what
    :func:`payload_bytes` writes for some event (see :func:`_check_signable`)."""
    return bool(len(payload) > MAX_PAYLOAD_BYTES or b"\\u" in payload or (
        payload.count(b"{") + payload.count(b"[") > DEFAULT_MAX_DEPTH) or (
        _has_long_digit_run(payload)))


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """An event whose signature, key and encoding were verified. ``envelope`` is the exact
    received bytes (the ledger leaf); ``payload`` the exact signed payload bytes."""

    event_id: str
    kind: str
    envelope: bytes
    payload: bytes
    event: Event
    key_id: str
    principal: Principal


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    """Step 1 output: the envelope's parts, not yet authenticated."""

    payload_type: str
    payload: bytes
    key_id: str
    signature: bytes


# The canonical one-signature envelope whose strings need no JSON escaping: exactly the bytes
# ``_envelope_bytes`` writes for these fields, so a full match is already strictly parsed,
# canonical and shaped right. Anything else (including every error) takes the full parse.
_PLAIN_ENVELOPE = re.compile(
    rb'\{"payload":"([A-Za-z0-9+/]*={0,2})","payloadType":"([A-Za-z0-9./+-]+)",'
    rb'"signatures":\[\{"keyid":"([A-Za-z0-9._:-]+)","sig":"([A-Za-z0-9+/]+={0,2})"\}\]\}')


def parse_envelope(data: bytes) -> ParsedEnvelope:
    """Step 1: parse an envelope strictly.

    Raises InvalidEvent, or BadSignature(SIGNATURE_MISSING).
    """
    if len(data) <= MAX_ENVELOPE_BYTES and (plain := _PLAIN_ENVELOPE.fullmatch(data)):
        kind = plain[2].decode("ascii")
        payload, signature = _plain_b64(plain[1]), _plain_b64(plain[4])
        if kind in PAYLOAD_TYPES and payload is not None and signature is not None:
            return ParsedEnvelope(kind, payload, plain[3].decode("ascii"), signature)
    return _parse_envelope_full(data)  # everything else, and every failure's exact reason


def _parse_envelope_full(data: bytes) -> ParsedEnvelope:
    value = parse_strict(data, max_bytes=MAX_ENVELOPE_BYTES, max_depth=4)
    doc = as_object(value, "envelope")
    if set(doc) - {"payload", "payloadType", "signatures"}:
        raise InvalidEvent(Reason.MALFORMED, "unknown envelope fields")
    kind, body, sigs = doc.get("payloadType"), doc.get("payload"), doc.get("signatures")
    if not isinstance(kind, str) or not isinstance(body, str):
        raise InvalidEvent(Reason.MALFORMED, "payloadType and payload must be strings")
    if kind not in PAYLOAD_TYPES:
        raise InvalidEvent(Reason.UNSUPPORTED_VERSION, f"unsupported payloadType {kind[:100]!r}")
    payload = b64decode_strict(body, "payload")
    entries = [] if sigs is None else as_list(sigs, "signatures")
    if not entries:
        raise BadSignature(Reason.SIGNATURE_MISSING, "no signature")
    if len(entries) != 1:
        raise InvalidEvent(Reason.MALFORMED, "exactly one signature is allowed in v1")
    parsed, keyid, sig = _parse_signature(kind, payload, entries[0])
    if _envelope_bytes(kind, body, keyid, sig) != data:
        raise InvalidEvent(Reason.NON_CANONICAL, "envelope is not RFC 8785 canonical JSON")
    return parsed


def _parse_signature(kind: str, payload: bytes,
                     entry: JsonValue) -> tuple[ParsedEnvelope, str, str]:
    sig = as_object(entry, "signature")
    if set(sig) != {"keyid", "sig"}:
        raise InvalidEvent(Reason.MALFORMED, "a signature has exactly keyid and sig")
    keyid, encoded = sig["keyid"], sig["sig"]
    if not isinstance(keyid, str) or not isinstance(encoded, str):
        raise InvalidEvent(Reason.MALFORMED, "keyid and sig must be strings")
    if not encoded:
        raise BadSignature(Reason.SIGNATURE_MISSING, "empty signature")
    return (ParsedEnvelope(kind, payload, keyid, b64decode_strict(encoded, "sig")),
            keyid, encoded)


def parse_payload(payload_type_: str, payload: bytes) -> Event:
    """Steps 4-5: strict parse, model, canonical form. Raises InvalidEvent.

    Fast path: a payload that validates as the model and is byte for byte its canonical
    encoding is what the strict parse accepts unless :func:`_strict_parse_could_refuse`
    (the argument of :func:`_check_signable`), so the strict parse is skipped for it. Any
    failure takes the full path, which gives the exact reason.
    """
    model = PAYLOAD_TYPES[payload_type_]
    if not _strict_parse_could_refuse(payload):
        try:
            event = model.model_validate_json(payload)
            if payload_bytes(event) == payload:
                return event
        except ValueError:  # pydantic's ValidationError included: the full path says why
            pass
    return _parse_payload_full(model, payload)


def _parse_payload_full(model: type[Event], payload: bytes) -> Event:
    parse_strict(payload, max_bytes=MAX_PAYLOAD_BYTES)
    try:
        event = model.model_validate_json(payload)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidEvent(Reason.MALFORMED, f"{where}: {first['msg']}") from exc
    if payload_bytes(event) != payload:
        raise InvalidEvent(Reason.NON_CANONICAL, "payload is not the canonical event encoding")
    return event


def verify_envelope(data: bytes, keyring: KeyRing, now: datetime | None) -> VerifiedEvent:
    """Verify envelope bytes received at ``now`` (steps in the module docstring).

    ``now=None`` skips the key's validity window: only for re-verifying stored leaves (audit),
    whose keys were checked at arrival. Raises Rejected (InvalidEvent or BadSignature).
    """
    parsed = parse_envelope(data)                                    # 1
    principal = keyring.get(parsed.key_id)                           # 2
    message = pae(parsed.payload_type, parsed.payload)
    if not verify_signature(principal.public_key, message, parsed.signature):   # 3
        raise BadSignature(Reason.SIGNATURE_INVALID, "signature does not verify")
    if now is not None:
        principal.check_in_force(now)
    event = parse_payload(parsed.payload_type, parsed.payload)      # 4, 5
    if event.signer != principal.identity:                           # 6
        raise BadSignature(Reason.IDENTITY_MISMATCH,
                           f"signed by {principal.identity}, claims {event.signer}")
    if principal.tenant not in ("*", event.tenant):
        raise BadSignature(Reason.TENANT_MISMATCH,
                           f"key of tenant {principal.tenant}, event of {event.tenant}")
    return VerifiedEvent(event_id(parsed.payload), event.KIND, data, parsed.payload, event,
                         parsed.key_id, principal)


# -- bytes this system stored itself ---------------------------------------------------------
#
# The processor journal holds inputs that passed the full verification above on arrival and
# outputs the authority signed. Restoring from it should not pay for every encoding check
# again (a restart would take longer than the decisions did), but it must not trust the file
# blindly either. So: an input is only *read* (its nonce and rate-limit token can only narrow
# authority), and every output whose effect is restored (a grant, a revocation, a use) is
# authenticated by its signature, which is what protects it from a modified journal.


@dataclass(frozen=True, slots=True)
class StoredPayload:
    """An envelope read without verification: its type, exact payload bytes and object, and
    its signature entries as found."""

    model: type[Event]
    payload: bytes
    fields: dict[str, object]
    signatures: object


def read_stored(data: bytes) -> StoredPayload | None:
    """Read envelope bytes that were verified when they arrived; None if they do not even
    decode. No signature, canonical-form or model check: never use on outside input."""
    try:
        doc = json.loads(data)
        model = PAYLOAD_TYPES[doc["payloadType"]]
        payload = base64.b64decode(doc["payload"], validate=True)
        fields = json.loads(payload)
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None
    if not isinstance(fields, dict):
        return None
    return StoredPayload(model, payload, fields, doc.get("signatures"))


def verify_stored(data: bytes | StoredPayload, keyring: KeyRing,
                  signer: str) -> tuple[Event, str]:
    """The event, and its id, in envelope bytes that ``signer`` signed and this system stored
    (or in what :func:`read_stored` made of them).

    Checks what authenticates: a key of ``keyring`` whose identity is ``signer`` made the
    Ed25519 signature over PAE of these exact payload bytes, and the payload is a valid
    model claiming that signer. Skips the encoding checks of :func:`verify_envelope`, which
    held when the bytes were signed and which a signature already pins. Raises Rejected.
    """
    stored = read_stored(data) if isinstance(data, bytes) else data
    if stored is None:
        raise InvalidEvent(Reason.MALFORMED, "stored envelope does not decode")
    sigs = stored.signatures
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise BadSignature(Reason.SIGNATURE_MISSING, "stored envelope has no single signature")
    keyid, sig = sigs[0].get("keyid"), sigs[0].get("sig")
    if not isinstance(keyid, str) or not isinstance(sig, str):
        raise BadSignature(Reason.SIGNATURE_MISSING, "stored signature is not keyid and sig")
    principal = keyring.get(keyid)
    if principal.identity != signer:
        raise BadSignature(Reason.IDENTITY_MISMATCH, f"stored envelope signed by "
                                                     f"{principal.identity}, not {signer}")
    message = pae(payload_type(stored.model.KIND), stored.payload)
    if not verify_signature(principal.public_key, message, b64decode_strict(sig, "sig")):
        raise BadSignature(Reason.SIGNATURE_INVALID, "stored signature does not verify")
    try:
        event = stored.model.model_validate_json(stored.payload)
    except pydantic.ValidationError as exc:
        raise InvalidEvent(Reason.MALFORMED, "stored payload is not a valid event") from exc
    if event.signer != signer:
        raise BadSignature(Reason.IDENTITY_MISMATCH, f"stored event claims {event.signer}")
    return event, event_id(stored.payload)
