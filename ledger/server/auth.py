"""Who is calling the API: HTTP Message Signatures (RFC 9421) with a keyring key, or a bearer
token bound to a principal (``ledger.server.tokens``).

Signed requests, checked in this order (each failure is 401 ``UNAUTHENTICATED``):

1. exactly one signature tagged ``govledger`` (RFC 9421 section 2.3 ``tag``), parsed and
   verified by the ``http-message-signatures`` library with our Ed25519
   (``ledger.sdk.httpsig.GovledgerEd25519``) under the key its ``keyid`` names in the
   *current* keyring (``keyring()`` is called per request, so a key revoked by governance
   stops working at once); the key must be in force now;
2. ``created`` and ``expires`` both present, ``expires`` after ``created`` and at most
   ``MAX_LIFETIME_S`` later, ``created`` not in the future and ``expires`` not past (each
   with ``CLOCK_SKEW_S`` of tolerance);
3. coverage: ``@method``, and ``@target-uri`` (or ``@path`` with ``@query``, for a client
   behind a proxy that rewrites the scheme or host); with a body, ``content-digest`` (RFC
   9530), checked against the bytes received;
4. a ``nonce`` never seen with that key while its signature could still be valid
   (:class:`NonceMemory`): a replay within the window is refused, and after the window the
   signature itself has expired. So replay is bounded by the window plus this memory.

Bearer tokens: ``Authorization: Bearer glt_...``, hashed and compared in constant time; the
principal comes from the current keyring by the token's key id (in force now).

Then reading needs a read role (``ledger.core.tenancy.READ_ROLES``): 403 ``FORBIDDEN``.
Every 401 carries ``WWW-Authenticate`` and ``Accept-Signature`` (RFC 9421 section 5.1).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
)
from starlette.datastructures import Headers
from starlette.requests import Request

from ledger.clock import utc_now
from ledger.core.envelope import MAX_ENVELOPE_BYTES
from ledger.core.keys import KeyRing, Principal
from ledger.core.tenancy import READ_ROLES, may_read_api
from ledger.errors import BadSignature, Reason, Rejected, Unavailable
from ledger.sdk.httpsig import MAX_LIFETIME_S, TAG, GovledgerEd25519
from ledger.server.http_errors import ApiError
from ledger.server.tokens import TokenTable

CLOCK_SKEW_S: Final = 30
NONCE_CAPACITY: Final = 500_000
MAX_NONCE_LENGTH: Final = 256
CHALLENGE: Final = {
    "WWW-Authenticate": f'Signature realm="govledger", tag="{TAG}", Bearer realm="govledger"',
    "Accept-Signature": f'{TAG}=("@method" "@target-uri");created;expires;nonce;keyid;'
                        f'alg="ed25519";tag="{TAG}"',
}


def unauthenticated(detail: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", detail, headers=CHALLENGE)


class NonceMemory:
    """(key id, nonce) pairs seen, each kept until its signature's ``expires`` plus the skew.
    Bounded: when ``capacity`` pairs are still live, new signed requests are refused with
    Unavailable (503) rather than forgetting a nonce that could be replayed."""

    def __init__(self, capacity: int = NONCE_CAPACITY) -> None:
        self.capacity = capacity
        self._until: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def remember(self, key_id: str, nonce: str, until: float, now: float) -> None:
        """Record a first use. Raises ApiError 401 (a replay) or Unavailable (full)."""
        pair = (key_id, nonce)
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                if self._until.get(old, now + 1) <= now:
                    del self._until[old]
            if pair in self._until:
                raise unauthenticated("replayed signature: this nonce was already used")
            if len(self._until) >= self.capacity:
                raise Unavailable("too many signed requests within the signature window")
            self._until[pair] = until
            heapq.heappush(self._expiry, (until, pair))

    def __len__(self) -> int:
        return len(self._until)


class _KeyResolver(HTTPSignatureKeyResolver):
    """Public keys of the principals in force now; says why a key was refused."""

    def __init__(self, ring: KeyRing, now: datetime) -> None:
        self.ring, self.now, self.refusal = ring, now, ""

    def resolve_public_key(self, key_id: str) -> bytes | None:
        try:
            principal = self.ring.get(key_id)
            principal.check_in_force(self.now)
        except BadSignature as exc:
            self.refusal = f"{exc.reason.value}: keyid {key_id[:16]} is unknown or not in force"
            return None
        return principal.public_key


@dataclass
class _Message:
    """The request as the library reads it: method, the target URI as received, headers."""

    method: str
    url: str
    headers: Headers


def _target_uri(request: Request) -> str:
    """scheme://authority/path?query with the path and query exactly as sent."""
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    path = raw_path.decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}{path}" + (f"?{query}" if query else "")


class ApiAuth:
    """Authenticates API callers against the current keyring (module docstring)."""

    def __init__(self, keyring: Callable[[], KeyRing], tokens: TokenTable | None = None, *,
                 clock: Callable[[], datetime] = utc_now,
                 nonces: NonceMemory | None = None) -> None:
        self.keyring, self.tokens, self.clock = keyring, tokens or TokenTable(), clock
        self.nonces = nonces or NonceMemory()

    @staticmethod
    def presented(request: Request) -> bool:
        """Whether the request carries any credential (then it must verify)."""
        headers = request.headers
        return any(h in headers for h in ("signature", "signature-input", "authorization"))

    def authenticate(self, request: Request, body: bytes) -> Principal:
        """The principal who made ``request`` (its received ``body`` included). Raises
        ApiError 401 (no, malformed, expired, replayed or wrong credential) or
        Unavailable (the nonce memory is full)."""
        headers = request.headers
        signed = "signature" in headers or "signature-input" in headers
        if signed and "authorization" in headers:
            raise unauthenticated("give one credential: a signature or a bearer token")
        if signed:
            return self._signed(request, body)
        if "authorization" in headers:
            return self._bearer(headers["authorization"])
        raise unauthenticated("sign the request (RFC 9421, your keyring key) or send a "
                              "bearer token")

    def reader(self, request: Request, body: bytes) -> Principal:
        """:meth:`authenticate`, then require a read role: ApiError 403 otherwise."""
        principal = self.authenticate(request, body)
        if not may_read_api(principal):
            raise ApiError(403, "FORBIDDEN", f"{principal.identity} may not read: reading "
                           f"needs one of the roles {', '.join(sorted(READ_ROLES))}")
        return principal

    def _signed(self, request: Request, body: bytes) -> Principal:
        ring, now = self.keyring(), self.clock()
        resolver = _KeyResolver(ring, now)
        verifier = HTTPMessageVerifier(signature_algorithm=GovledgerEd25519,
                                       key_resolver=resolver)
        verifier.max_clock_skew = timedelta(seconds=CLOCK_SKEW_S)
        message = _Message(request.method, _target_uri(request), request.headers)
        try:
            results = verifier.verify(message, max_age=timedelta(seconds=MAX_LIFETIME_S),
                                      expect_tag=TAG, require_components=("@method",),
                                      body=body)
        except HTTPMessageSignaturesException as exc:
            raise unauthenticated(resolver.refusal or f"signature refused: {exc}") from exc
        if len(results) != 1:
            raise unauthenticated(f"exactly one signature tagged {TAG!r} is accepted")
        params, covered = results[0].parameters, results[0].covered_components
        until = _check_window(params, now)
        _check_coverage(covered, body)
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= MAX_NONCE_LENGTH:
            raise unauthenticated("the signature needs a nonce of 16 to 256 characters")
        principal = ring.get(str(params["keyid"]))
        self.nonces.remember(principal.key_id, nonce, until, now.timestamp())
        return principal

    def _bearer(self, value: str) -> Principal:
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Authorization must be 'Bearer <token>'")
        entry = self.tokens.match(token.strip())
        if entry is None:
            raise unauthenticated("unknown bearer token")
        try:
            principal = self.keyring().get(entry.key_id)
            principal.check_in_force(self.clock())
        except BadSignature as exc:
            raise unauthenticated(f"the token's key is not in force ({exc.reason.value})"
                                  ) from exc
        return principal


def _check_window(params: Mapping[str, object], now: datetime) -> float:
    """Step 2 of the module docstring. Returns until when the nonce must be remembered."""
    created, expires = params.get("created"), params.get("expires")
    if not isinstance(created, int) or not isinstance(expires, int):
        raise unauthenticated("the signature needs created and expires")
    if not created < expires <= created + MAX_LIFETIME_S:
        raise unauthenticated(f"expires must follow created by at most {MAX_LIFETIME_S}s")
    moment = now.timestamp()
    if created > moment + CLOCK_SKEW_S:
        raise unauthenticated("the signature was created in the future")
    if expires < moment - CLOCK_SKEW_S:
        raise unauthenticated("the signature has expired")
    return float(expires + CLOCK_SKEW_S)


def _check_coverage(covered: Mapping[str, str], body: bytes) -> None:
    """Step 3 of the module docstring (the library checked the digest against ``body``)."""
    names = {name.split(";")[0].strip('"') for name in covered}
    if "@target-uri" not in names and not {"@path", "@query"} <= names:
        raise unauthenticated("the signature must cover @target-uri (or @path and @query)")
    if body and "content-digest" not in names:
        raise unauthenticated("a request with a body must sign its content-digest")


# -- FastAPI wiring ------------------------------------------------------------------------

Reader = Callable[..., Awaitable[Principal]]

# Declared for the OpenAPI document (components.securitySchemes; either one is enough); the
# checking is ApiAuth's, not theirs.
_SIGNATURE = APIKeyHeader(
    name="Signature", scheme_name="httpMessageSignature", auto_error=False,
    description="HTTP Message Signatures (RFC 9421), Ed25519 with the caller's keyring key: "
    "Signature and Signature-Input covering @method, @target-uri (and content-digest, RFC "
    f"9530, for a body); created, expires (<= {MAX_LIFETIME_S}s later), nonce, "
    f"keyid = the key id, alg=\"ed25519\", tag=\"{TAG}\". See docs/api.md.")
_BEARER = HTTPBearer(scheme_name="bearerToken", auto_error=False,
                     description="A token from `govledger tokens create`, bound to one "
                     "principal of the keyring.")


async def read_body(request: Request, cap: int) -> bytes:
    """The raw body, refusing (OVERSIZED) as soon as it passes ``cap`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(Reason.MALFORMED, "invalid Content-Length")
        if int(declared) > cap:
            raise Rejected(Reason.OVERSIZED, f"body of {declared} bytes exceeds {cap}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise Rejected(Reason.OVERSIZED, f"body exceeds {cap} bytes")
    return bytes(body)


def reader_dependency(auth: ApiAuth) -> Reader:
    """A FastAPI dependency: the calling principal, with a read role (401/403 otherwise)."""
    async def reader(request: Request,
                     _signature: Annotated[str | None, Security(_SIGNATURE)],
                     _bearer: Annotated[HTTPAuthorizationCredentials | None,
                                        Security(_BEARER)]) -> Principal:
        return auth.reader(request, await read_body(request, MAX_ENVELOPE_BYTES))
    return reader
