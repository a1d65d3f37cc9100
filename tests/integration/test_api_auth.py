"""API authentication and tenant isolation through real HTTP (issue 19 item 1): the API served
by uvicorn on a free loopback port, over a real ledger of tenant ``acme`` events.

Every refusal is a 401 with a challenge (or a 403 without a read role); every read route
answers another tenant's ids exactly as unknown ones; public routes stay public; the keyring
is read per request, so a key removed from it stops working at once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from http_message_signatures import HTTPMessageSigner

from ledger.core.artifact import CheckedArtifact
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.errors import Reason
from ledger.sdk.gate import ExecutionRefusedError, http_log_check
from ledger.sdk.httpsig import COVERED, TAG, GovledgerEd25519, SignedRequests, bearer
from ledger.sdk.httpsig import _Message as SignedView
from ledger.sdk.httpsig import _OneSigner as OneSigner
from ledger.server.api import make_api
from ledger.server.auth import ApiAuth
from ledger.server.tokens import TokenEntry, TokenTable, token_digest
from tests.factories import ALICE, AUTHORITY, MALLORY, default_ring, seeded_signer
from tests.http_support import served
from tests.unit.test_api import RID, TOKEN, FakeBackend, Ledger, build_ledger, decision_envelope

pytestmark = pytest.mark.integration

GLOBEX = seeded_signer("globex-reader")
OPERATOR = seeded_signer("operator-auditor")
REVOKED = seeded_signer("revoked-reader")
REVOKED_TOKEN = "glt_" + "r" * 43
UNKNOWN_ID = "ab" * 32


def ring() -> KeyRing:
    return KeyRing([*default_ring().principals(),
                    Principal("reader:globex", "globex", GLOBEX.public_key,
                              frozenset({"reader"})),
                    Principal("ops:auditor", "*", OPERATOR.public_key, frozenset({"auditor"})),
                    Principal("reader:old", "acme", REVOKED.public_key, frozenset({"reader"}),
                              revoked_at=datetime(2020, 1, 1, tzinfo=UTC))])


class Keys:
    """The keyring the API asks for on every request (the service hands it a callable)."""

    ring = ring()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return build_ledger(tmp_path_factory.mktemp("api-auth"))


@pytest.fixture(scope="module")
def backend(ledger: Ledger) -> FakeBackend:
    fake = FakeBackend(ledger.data_dir, ledger.vkey)
    fake.wait_cap = 5
    fake.publish(RID, decision_envelope("grant", RID)[0])
    return fake


@pytest.fixture(scope="module")
def api(backend: FakeBackend) -> Iterator[str]:
    tokens = TokenTable((TokenEntry(ALICE.key_id, "agent:alice", token_digest(TOKEN)),
                         TokenEntry(REVOKED.key_id, "reader:old",
                                    token_digest(REVOKED_TOKEN))))
    app = make_api(backend, auth=ApiAuth(lambda: Keys.ring, tokens))
    with served(app) as url:
        yield url


def get(api: str, path: str, auth: httpx.Auth | None = None, **params: object) -> httpx.Response:
    with httpx.Client(base_url=api, auth=auth, timeout=30) as http:
        return http.get(path, params=params)  # type: ignore[arg-type]


# -- refusals ------------------------------------------------------------------------------


def custom_signed(api: str, method: str, path: str, signer: Signer, *, body: bytes = b"",
                  created: timedelta = timedelta(0), lifetime: timedelta = timedelta(seconds=60),
                  nonce: str | None = "a-fresh-nonce-0123456789", tag: str | None = TAG,
                  components: tuple[str, ...] = COVERED, sign_body: bool = True,
                  expires: bool = True) -> httpx.Request:
    """A request signed with parameters the SDK would never choose."""
    request = httpx.Request(method, api + path, content=body or None,
                            headers={"content-type": "application/json"} if body else None)
    start = datetime.now(UTC) + created
    HTTPMessageSigner(signature_algorithm=GovledgerEd25519, key_resolver=OneSigner(signer)).sign(
        SignedView(method, str(request.url), request.headers), key_id=signer.key_id,
        created=start, expires=start + lifetime if expires else None, nonce=nonce, tag=tag,
        label="govledger", covered_component_ids=components,
        body=body if (body and sign_body) else None)
    return request


def sdk_signed(api: str, method: str, path: str, signer: Signer = ALICE,
               body: bytes = b"") -> httpx.Request:
    request = httpx.Request(method, api + path, content=body or None)
    flow = SignedRequests(signer).auth_flow(request)
    return next(flow)


def moved(api: str) -> httpx.Request:
    """Headers signed for /v1/entries/0, sent to /v1/entries/1."""
    signed = sdk_signed(api, "GET", "/v1/entries/0")
    return httpx.Request("GET", api + "/v1/entries/1", headers=signed.headers)


def flipped(api: str) -> httpx.Request:
    request = sdk_signed(api, "GET", "/v1/entries/0")
    sig = request.headers["signature"]
    raw = bytearray(base64.b64decode(sig.split(":")[1]))
    raw[0] ^= 1
    request.headers["signature"] = f"govledger=:{base64.b64encode(bytes(raw)).decode()}:"
    return request


def tampered_body(api: str) -> httpx.Request:
    request = custom_signed(api, "POST", "/v1/events?wait=1", ALICE, body=b'{"a":1}')
    return httpx.Request("POST", request.url, headers=request.headers, content=b'{"a":2}')


def raw(headers: dict[str, str]) -> Callable[[str], httpx.Request]:
    return lambda api: httpx.Request("GET", api + "/v1/entries/0", headers=headers)


REFUSALS: dict[str, Callable[[str], httpx.Request]] = {
    "no credential": raw({}),
    "malformed signature headers": raw({"Signature-Input": "govledger=garbage(",
                                        "Signature": "govledger=:AAAA:"}),
    "signature without signature-input": raw({"Signature": "govledger=:AAAA:"}),
    "key not in the keyring": lambda api: sdk_signed(api, "GET", "/v1/entries/0", MALLORY),
    "revoked key": lambda api: sdk_signed(api, "GET", "/v1/entries/0", REVOKED),
    "expired signature": lambda api: custom_signed(
        api, "GET", "/v1/entries/0", ALICE, created=-timedelta(minutes=10)),
    "created in the future": lambda api: custom_signed(
        api, "GET", "/v1/entries/0", ALICE, created=timedelta(minutes=10)),
    "lifetime over 300 s": lambda api: custom_signed(
        api, "GET", "/v1/entries/0", ALICE, lifetime=timedelta(hours=1)),
    "no expires": lambda api: custom_signed(api, "GET", "/v1/entries/0", ALICE, expires=False),
    "no nonce": lambda api: custom_signed(api, "GET", "/v1/entries/0", ALICE, nonce=None),
    "short nonce": lambda api: custom_signed(api, "GET", "/v1/entries/0", ALICE, nonce="n1"),
    "another protocol's tag": lambda api: custom_signed(
        api, "GET", "/v1/entries/0", ALICE, tag="not-govledger"),
    "method not covered": lambda api: custom_signed(
        api, "GET", "/v1/entries/0", ALICE, components=("@target-uri",)),
    "target not covered": lambda api: custom_signed(
        api, "GET", "/v1/entries/0", ALICE, components=("@method",)),
    "signed for another path": moved,
    "signature bit flipped": flipped,
    "body does not match its digest": tampered_body,
    "body digest not signed": lambda api: custom_signed(
        api, "POST", "/v1/events?wait=1", ALICE, body=b'{"a":1}', sign_body=False),
    "unknown bearer token": raw({"Authorization": "Bearer glt_" + "x" * 43}),
    "malformed authorization": raw({"Authorization": "Basic YWxpY2U6c2VjcmV0"}),
    "token of a revoked key": raw({"Authorization": f"Bearer {REVOKED_TOKEN}"}),
    "signature and token together": lambda api: httpx.Request(
        "GET", api + "/v1/entries/0", headers={
            **sdk_signed(api, "GET", "/v1/entries/0").headers,
            "Authorization": f"Bearer {TOKEN}"}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_is_401_with_a_challenge(api: str, backend: FakeBackend,
                                              case: str) -> None:
    submitted = len(backend.submitted)
    with httpx.Client(timeout=30) as http:
        response = http.send(REFUSALS[case](api))
    assert response.status_code == 401, (case, response.text)
    assert response.json()["reason"] == "UNAUTHENTICATED"
    assert response.json()["detail"]
    assert "Signature" in response.headers["www-authenticate"]
    assert "Bearer" in response.headers["www-authenticate"]
    assert 'tag="govledger"' in response.headers["accept-signature"]
    assert len(backend.submitted) == submitted       # nothing got past the refusal


def test_the_same_signed_request_twice_is_a_replay(api: str) -> None:
    request = sdk_signed(api, "GET", "/v1/entries/0")
    with httpx.Client(timeout=30) as http:
        assert http.send(request).status_code == 200
        again = http.send(request)
    assert again.status_code == 401
    assert "replayed" in again.json()["detail"]


def test_submit_and_wait_without_a_credential_is_401_and_submits_nothing(
        api: str, backend: FakeBackend) -> None:
    from tests.factories import signed_request
    submitted = len(backend.submitted)
    with httpx.Client(base_url=api, timeout=30) as http:
        refused = http.post("/v1/events", params={"wait": 1},
                            content=signed_request(nonce="auth-submit-wait-01"))
        accepted = http.post("/v1/events", content=signed_request(nonce="auth-submit-plain1"))
    assert refused.status_code == 401
    assert accepted.status_code == 202                # a write needs only its own signature
    assert len(backend.submitted) == submitted + 1


def test_a_principal_without_a_read_role_is_403(api: str) -> None:
    response = get(api, "/v1/entries/0", SignedRequests(AUTHORITY))   # a service key
    assert response.status_code == 403
    assert response.json()["reason"] == "FORBIDDEN"


def test_a_key_removed_from_the_live_keyring_stops_at_once(api: str) -> None:
    assert get(api, "/v1/entries/0", SignedRequests(OPERATOR)).status_code == 200
    try:
        Keys.ring = KeyRing([p for p in ring().principals() if p.identity != "ops:auditor"])
        assert get(api, "/v1/entries/0", SignedRequests(OPERATOR)).status_code == 401
    finally:
        Keys.ring = ring()


def test_signed_requests_and_tokens_read(api: str, ledger: Ledger) -> None:
    assert get(api, "/v1/entries/0", SignedRequests(ALICE)).status_code == 200
    assert get(api, "/v1/entries/0", bearer(TOKEN)).status_code == 200
    with httpx.Client(base_url=api, auth=SignedRequests(ALICE), timeout=30) as http:
        response = http.post("/v1/events", params={"wait": 1},  # body digest signed
                             content=b'{"x": 1}', headers={"content-type": "application/json"})
    assert response.status_code == 400                 # authenticated, then a bad envelope


# -- tenant isolation ----------------------------------------------------------------------

# (path, parameters, the id or index in it, an unknown one of the same kind)
def read_routes(ledger: Ledger) -> list[tuple[str, dict[str, object], str, str]]:
    head = ledger.chain[-1]
    return [
        ("/v1/entries/3", {}, "3", "999"),
        ("/v1/entries", {"event_id": head}, head, UNKNOWN_ID),
        ("/v1/proofs/inclusion", {"index": 3}, "3", "999"),
        ("/v1/proofs/inclusion", {"index": 13}, "13", "999"),   # sequenced, not published
        ("/v1/proofs/inclusion", {"event_id": head}, head, UNKNOWN_ID),
        ("/v1/proofs/lineage", {"event_id": head}, head, UNKNOWN_ID),
        (f"/v1/decisions/{RID}", {}, RID, UNKNOWN_ID),
    ]


def test_every_read_route_answers_another_tenants_ids_as_unknown_ones(
        api: str, ledger: Ledger) -> None:
    for path, params, known, unknown in read_routes(ledger):
        own = get(api, path, SignedRequests(ALICE), **params)
        assert own.status_code in (200, 404), (path, own.text)   # 13: NOT_PUBLISHED to acme
        assert get(api, path, SignedRequests(OPERATOR), **params).status_code == own.status_code
        foreign = get(api, path, SignedRequests(GLOBEX), **params)
        swap = {k: (unknown if str(v) == known else v) for k, v in params.items()}
        missing = get(api, path.replace(known, unknown), SignedRequests(GLOBEX), **swap)
        assert foreign.status_code == missing.status_code == 404, (path, foreign.text)
        assert foreign.headers.get("content-type") == missing.headers.get("content-type")
        assert foreign.json() == {**missing.json(), "detail": re.sub(
            unknown, known, missing.json()["detail"])}, path


def test_another_tenants_decision_waits_as_long_as_an_unknown_one(api: str) -> None:
    start = time.monotonic()
    foreign = get(api, f"/v1/decisions/{RID}", SignedRequests(GLOBEX), wait=0.5)
    took = time.monotonic() - start
    missing = get(api, f"/v1/decisions/{UNKNOWN_ID}", SignedRequests(GLOBEX), wait=0.5)
    assert (foreign.status_code, foreign.json()["reason"]) == (404, "PENDING")
    assert foreign.json()["detail"] == missing.json()["detail"].replace(UNKNOWN_ID, RID)
    assert took >= 0.5


def test_hash_only_routes_stay_public(api: str) -> None:
    for path, params in (("/v1/checkpoint", {}), ("/v1/vkey", {}), ("/healthz", {}),
                         ("/v1/proofs/consistency", {"old_size": 5})):
        assert get(api, path, **params).status_code == 200, path


def test_openapi_declares_both_schemes_on_every_read_route(api: str) -> None:
    doc = get(api, "/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"httpMessageSignature", "bearerToken"}
    guarded = {"/v1/decisions/{subject_id}", "/v1/entries/{index}", "/v1/entries",
               "/v1/proofs/inclusion", "/v1/proofs/lineage", "/v1/approvals",
               "/v1/approvals/{request_id}"}
    optional = {"/tile/{rest}"}  # hash tiles public; entry bundles for tenant * only
    for path, operations in doc["paths"].items():
        security = operations.get("get", {}).get("security")
        if path in guarded:
            assert security == [{"httpMessageSignature": []}, {"bearerToken": []}], path
        elif path in optional:
            assert security == [{}, {"httpMessageSignature": []}, {"bearerToken": []}], path
        elif "get" in operations:
            assert security is None, path
    assert doc["paths"]["/v1/events"]["post"]["security"] == [           # optional
        {}, {"httpMessageSignature": []}, {"bearerToken": []}]


# -- the clients against the authenticated API --------------------------------------------


def key_file(tmp_path: Path, label: str) -> Path:
    """The PKCS#8 PEM file of a seeded test signer (what ``keys generate`` writes)."""
    seed = hashlib.sha256(f"govledger test key {label}".encode()).digest()
    path = tmp_path / f"{label}.key"
    path.write_bytes(Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_cli_decision_signs_with_key_or_sends_a_token(api: str, tmp_path: Path) -> None:
    token_file = tmp_path / "alice.token"
    token_file.write_text(TOKEN + "\n")
    signed = cli("decision", RID, "--api", api, "--wait", "0", "--key",
                 str(key_file(tmp_path, "alice")))
    assert (signed.returncode, signed.stdout.split()[0]) == (0, "ALLOWED"), signed.stderr
    by_token = cli("decision", RID, "--api", api, "--wait", "0", "--token-file",
                   str(token_file))
    assert by_token.returncode == 0, by_token.stderr
    foreign = cli("decision", RID, "--api", api, "--wait", "0", "--key",
                  str(key_file(tmp_path, "globex-reader")))
    assert (foreign.returncode, foreign.stdout.strip()) == (1, "NONE PENDING")
    anonymous = cli("decision", RID, "--api", api, "--wait", "0")
    assert anonymous.returncode == 2
    assert "--key" in anonymous.stderr


def test_the_gates_log_check_signs_and_a_refused_one_says_why(api: str,
                                                              ledger: Ledger) -> None:
    head = ledger.chain[-1]
    leaf = base64.b64decode(get(api, "/v1/entries", bearer(TOKEN), event_id=head).json()["leaf"])
    checked = CheckedArtifact(head, None, leaf)  # type: ignore[arg-type]
    assert asyncio.run(http_log_check(api, ledger.vkey, auth=SignedRequests(ALICE))(checked))
    with pytest.raises(ExecutionRefusedError) as refused:
        asyncio.run(http_log_check(api, ledger.vkey)(checked))
    assert refused.value.reason is Reason.ARTIFACT_NOT_LOGGED
    assert "401" in refused.value.detail
