"""Envelope sign and verify rates on this machine (one core), printed, not asserted.

    .venv/bin/python tests/benchmarks/bench_envelope.py [--n 20000]

Measures: full verify_envelope (strict parse, key lookup, Ed25519 via libsodium, payload
parse, pydantic model, canonical check, identity binding), sign_event (model -> RFC 8785
payload -> PAE -> Ed25519), and the raw Ed25519 primitives of libsodium and OpenSSL for
comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.core.envelope import pae, payload_bytes, sign_event, verify_envelope
from ledger.core.keys import verify_signature
from tests.factories import ALICE, T0, default_ring, request


def rate(label: str, n: int, fn: object) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    per_s = n / (time.perf_counter() - start)
    print(f"{label:<44} {per_s:>10,.0f} /s  ({1e6 / per_s:,.1f} us each)")
    return per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per figure")
    n = parser.parse_args().n
    event = request()
    envelope = sign_event(event, ALICE)
    ring = default_ring()
    message = pae("application/vnd.govledger.authorization-requested.v1+json",
                  payload_bytes(event))
    sig = ALICE.sign(message)
    openssl = Ed25519PrivateKey.from_private_bytes(bytes(32))
    openssl_pub = openssl.public_key()
    openssl_sig = openssl.sign(message)
    print(f"envelope {len(envelope)} bytes, payload {len(payload_bytes(event))} bytes")
    rate("verify_envelope (all steps)", n, lambda: verify_envelope(envelope, ring, T0))
    rate("sign_event (all steps)", n, lambda: sign_event(event, ALICE))
    rate("Ed25519 verify, libsodium (PyNaCl)", n,
         lambda: verify_signature(ALICE.public_key, message, sig))
    rate("Ed25519 verify, OpenSSL (cryptography)", n,
         lambda: openssl_pub.verify(openssl_sig, message))
    rate("Ed25519 sign, libsodium (PyNaCl)", n, lambda: ALICE.sign(message))
    rate("Ed25519 sign, OpenSSL (cryptography)", n, lambda: openssl.sign(message))


if __name__ == "__main__":
    main()
