"""HTTP Message Signatures (RFC 9421) with a keyring key: how API clients authenticate.

The signature and its base are built by the ``http-message-signatures`` library (RFC 9421
final); the Ed25519 arithmetic is ours (:mod:`ledger.core.keys`: libsodium, strict), plugged
in as the library's algorithm ``ed25519`` (RFC 9421 section 3.3.6), so a key the keyring
refuses (small order, non-canonical) never verifies here either.

What a govledger request signature covers (the server, ``ledger.server.auth``, requires it):

* components ``@method`` and ``@target-uri`` (section 2.2), plus ``content-digest`` (RFC 9530,
  SHA-256 of the body) whenever there is a body;
* parameters ``created``, ``expires`` (at most :data:`MAX_LIFETIME_S` later), a fresh
  ``nonce``, ``keyid`` = the principal's key id (hex SHA-256 of its public key,
  ``ledger.core.keys.key_id``), ``alg="ed25519"`` and ``tag="govledger"`` (section 2.3:
  the tag keeps a govledger signature from being taken for another protocol's).

::

    async with httpx.AsyncClient(base_url=api, auth=SignedRequests(signer)) as http:
        await http.get(f"/v1/decisions/{request_id}")
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import httpx
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPSignatureAlgorithm,
    HTTPSignatureKeyResolver,
    InvalidSignature,
)

from ledger.clock import utc_now
from ledger.core.keys import Signer, verify_signature

TAG: Final = "govledger"
LABEL: Final = "govledger"
MAX_LIFETIME_S: Final = 300          # the server refuses signatures valid for longer
DEFAULT_LIFETIME_S: Final = 60
COVERED: Final = ("@method", "@target-uri")


class GovledgerEd25519(HTTPSignatureAlgorithm):
    """RFC 9421 ``ed25519`` over :mod:`ledger.core.keys`: ``private_key`` is a
    :class:`~ledger.core.keys.Signer`, ``public_key`` the raw 32 key bytes. ``verify``
    raises InvalidSignature (the library's) when the signature does not verify."""

    algorithm_id = "ed25519"

    def __init__(self, public_key: bytes | None = None,
                 private_key: Signer | None = None) -> None:
        self.public_key, self.private_key = public_key, private_key

    def sign(self, message: bytes) -> bytes:
        if self.private_key is None:
            raise InvalidSignature("no private key to sign with")
        return self.private_key.sign(message)

    def verify(self, signature: bytes, message: bytes) -> None:
        if self.public_key is None or not verify_signature(self.public_key, message,
                                                           signature):
            raise InvalidSignature("the signature does not verify under the key")


class _OneSigner(HTTPSignatureKeyResolver):
    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def resolve_private_key(self, key_id: str) -> Signer:
        if key_id != self.signer.key_id:
            raise KeyError(key_id)
        return self.signer


@dataclass
class _Message:
    """The view of an ``httpx.Request`` the library signs (its headers are written in place)."""

    method: str
    url: str
    headers: httpx.Headers


def sign_request(request: httpx.Request, signer: Signer, *, now: datetime,
                 lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
    """Add ``Signature-Input``, ``Signature`` (and ``Content-Digest`` for a body) to
    ``request``, in place. Requires 0 < lifetime_s <= MAX_LIFETIME_S and the body read."""
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise ValueError(f"lifetime_s must be in (0, {MAX_LIFETIME_S}]")
    body = request.content
    url = str(request.url)
    if url.endswith("?"):  # an empty query: servers see no "?" at all (ASGI drops it)
        url = url[:-1]
    HTTPMessageSigner(signature_algorithm=GovledgerEd25519,
                      key_resolver=_OneSigner(signer)).sign(
        _Message(request.method, url, request.headers),
        key_id=signer.key_id, created=now, expires=now + timedelta(seconds=lifetime_s),
        nonce=secrets.token_urlsafe(18), label=LABEL, tag=TAG, include_alg=True,
        covered_component_ids=COVERED, body=body or None)


class SignedRequests(httpx.Auth):
    """httpx authentication that signs every request with ``signer`` (module docstring):
    ``httpx.Client(auth=SignedRequests(signer))``. Each request gets a fresh nonce, so a
    retried request is signed again rather than replayed."""

    requires_request_body = True

    def __init__(self, signer: Signer, *, lifetime_s: int = DEFAULT_LIFETIME_S,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.signer, self.lifetime_s, self.clock = signer, lifetime_s, clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                               None]:
        sign_request(request, self.signer, now=self.clock(), lifetime_s=self.lifetime_s)
        yield request


def bearer(token: str) -> httpx.Auth:
    """httpx authentication with an API bearer token (``govledger tokens create``)."""
    return _Bearer(token)


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                               None]:
        request.headers["Authorization"] = self._header
        yield request
