"""Generate tests/vectors/envelope/vectors.json (deterministic: fixed key, fixed payloads).

Run: python -m tests.vectors.make_envelope_vectors. The test fails if the committed file and
a fresh generation differ, so the vectors stay true to the code.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ledger.core.canonical import canonical_bytes
from ledger.core.envelope import (
    build_envelope,
    event_id,
    pae,
    payload_bytes,
    payload_type,
    sign_event,
)
from ledger.core.events import AuthorizationDenied, Event, RevocationApplied
from ledger.core.keys import Signer
from ledger.errors import Reason
from tests.factories import request

OUT = Path(__file__).parent / "envelope" / "vectors.json"
# RFC 8032 section 7.1, TEST 1 secret key: a published fixed key, never used for anything real.
SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"


def _signer() -> Signer:
    return Signer.from_private_bytes(bytes.fromhex(SEED_HEX))


def positive(name: str, event_obj: Event) -> dict[str, object]:
    signer = _signer()
    payload = payload_bytes(event_obj)
    ptype = payload_type(event_obj.KIND)
    envelope = build_envelope(ptype, payload, signer)
    sig = json.loads(envelope)["signatures"][0]["sig"]
    return {"desc": name, "want_error": None, "payloadType": ptype,
            "payload_utf8": payload.decode(), "payload_b64": base64.b64encode(payload).decode(),
            "pae_hex": pae(ptype, payload).hex(), "sig_b64": sig,
            "envelope": envelope.decode(), "event_id": event_id(payload),
            "kind": event_obj.KIND}


def mutate(base: dict[str, object], name: str, want: Reason, envelope: bytes) -> dict[str, object]:
    return {"desc": name, "want_error": want.value, "envelope": envelope.decode("utf-8", "replace")}


def build() -> dict[str, object]:
    signer = _signer()
    req = request(signer="agent:vector", tenant="acme", nonce="vector-nonce-0001")
    child = request(signer="agent:vector", tenant="acme", nonce="vector-nonce-0002",
                    root="11" * 32, parent="22" * 32, actions=("read", "write"))
    denial = AuthorizationDenied(signer="agent:vector", tenant="acme", nonce="vector-nonce-0003",
                                 issued_at=req.issued_at, request_id="33" * 32,
                                 reasons=(Reason.POLICY_DENY,), detail="no permit")
    one_chunk = RevocationApplied(signer="agent:vector", tenant="acme",
                                  nonce="vector-nonce-0004", issued_at=req.issued_at,
                                  revocation_id="44" * 32, artifact_id="55" * 32,
                                  root="11" * 32, revoked=("55" * 32, "66" * 32))
    second_chunk = one_chunk.model_copy(update={"nonce": "vector-nonce-0005",
                                                "revoked": ("77" * 32,), "chunk": 1,
                                                "chunks": 2})
    good = positive("root request", req)
    cases = [good, positive("child request with lineage", child), positive("denial", denial),
             positive("revocation applied, one chunk (no chunk fields)", one_chunk),
             positive("revocation applied, chunk 1 of 2", second_chunk)]
    one_payload = payload_bytes(one_chunk)
    explicit = one_payload.replace(b'"issued_at"', b'"chunk":0,"chunks":1,"issued_at"')
    env = json.loads(good["envelope"])  # type: ignore[arg-type]
    ptype = str(good["payloadType"])
    payload = base64.b64decode(str(good["payload_b64"]))

    def with_env(**changes: object) -> bytes:
        return canonical_bytes({**env, **changes})

    flipped = bytearray(base64.b64decode(str(good["sig_b64"])))
    flipped[0] ^= 1
    cases += [
        mutate(good, "bitflip@0 of signature", Reason.SIGNATURE_INVALID,
               with_env(signatures=[{"keyid": signer.key_id,
                                     "sig": base64.b64encode(bytes(flipped)).decode()}])),
        mutate(good, "payloadType swapped to a decision", Reason.SIGNATURE_INVALID,
               with_env(payloadType=payload_type("AuthorizationGranted"))),
        mutate(good, "no signatures", Reason.SIGNATURE_MISSING, with_env(signatures=[])),
        mutate(good, "trailing-garbage after envelope", Reason.MALFORMED,
               str(good["envelope"]).encode() + b"x"),
        mutate(good, "envelope with whitespace", Reason.NON_CANONICAL,
               json.dumps(env, indent=1).encode()),
        mutate(good, "unknown payloadType version", Reason.UNSUPPORTED_VERSION,
               build_envelope(ptype.replace(".v1+", ".v9+"), payload, signer)),
        mutate(good, "payload re-encoded with spaces, re-signed", Reason.NON_CANONICAL,
               build_envelope(ptype, json.dumps(json.loads(payload), sort_keys=True).encode(),
                              signer)),
        mutate(good, "payload with a duplicate key, re-signed", Reason.MALFORMED,
               build_envelope(ptype, payload[:-1] + b',"tenant":"acme"}', signer)),
        mutate(good, "payload integer beyond 2^53, re-signed", Reason.MALFORMED,
               build_envelope(ptype, b'{"n":9007199254740993}', signer)),
        mutate(good, "payload lone surrogate, re-signed", Reason.MALFORMED,
               build_envelope(ptype, b'{"s":"\\udc00"}', signer)),
        mutate(good, "signed by an unknown key (RFC 8032 TEST 2 key)", Reason.KEY_UNKNOWN,
               build_envelope(ptype, payload, Signer.from_private_bytes(bytes.fromhex(
                   "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")))),
        mutate(good, "payload names another signer", Reason.IDENTITY_MISMATCH,
               sign_event(request(signer="agent:other", tenant="acme"), signer)),
        mutate(good, "payload names another tenant", Reason.TENANT_MISMATCH,
               sign_event(request(signer="agent:vector", tenant="globex"), signer)),
        mutate(good, "truncated envelope", Reason.MALFORMED,
               str(good["envelope"]).encode()[:-7]),
        mutate(good, "revocation applied naming its default chunk fields, re-signed",
               Reason.NON_CANONICAL,
               build_envelope(payload_type("RevocationApplied"), explicit, signer)),
    ]
    return {
        "desc": "govledger DSSE envelope known-answer vectors, format v1. Keyring: one "
                "principal agent:vector, tenant acme, with the key below. Verify at "
                "2026-11-26T12:00:00Z.",
        "key": {"seed_hex": SEED_HEX,
                "public_key_b64": base64.b64encode(signer.public_key).decode(),
                "keyid": signer.key_id, "identity": "agent:vector", "tenant": "acme"},
        "verify_at": "2026-11-26T12:00:00Z",
        "cases": cases,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
