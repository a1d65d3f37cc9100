"""The HTTP shell (ledger/server/api.py) over an in-memory backend and a REAL ledger directory.

The backend is a fake on purpose: this tests the HTTP layer (status codes, error bodies, exact
bytes, proofs served from a real SQLite ledger). The running service is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.core.bundles import verify_bundle
from ledger.core.checkpoint import build_vkey, parse_vkey, verify_checkpoint
from ledger.core.envelope import MAX_ENVELOPE_BYTES, sign_event_with_id, verify_envelope
from ledger.core.events import AuthorizationDenied
from ledger.core.execution_events import ExecutionRefused
from ledger.core.keys import KeyRing, Principal
from ledger.core.signers import SignerKeys
from ledger.errors import ProofError, Reason, Unavailable
from ledger.log.ledger_dir import open_ledger, read_vkey
from ledger.log.proofs import prove_consistency, prove_inclusion, prove_lineage
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from ledger.sdk.httpsig import SignedRequests
from ledger.server.api import Submitted, make_api, summarize_decision
from ledger.server.auth import ApiAuth
from ledger.server.metrics import Metrics
from ledger.server.tokens import TokenEntry, TokenTable, token_digest
from tests.factories import (
    ALICE,
    AUTHORITY,
    MALLORY,
    T0,
    default_ring,
    seeded_signer,
    signed_request,
)
from tests.ledger_support import ORIGIN, envelopes, grant, lineage_chain, make_ledger

RID = hashlib.sha256(b"some request").hexdigest()
# agent:alice's API token (the table stores only its hash)
TOKEN = "glt_" + base64.urlsafe_b64encode(hashlib.sha256(b"alice token").digest()).decode()[:43]


# auditor:ops reads every tenant (tenant *): the only reader of the tiles' entry bundles
AUDITOR = seeded_signer("auditor")
AUDIT_TOKEN = "glt_" + base64.urlsafe_b64encode(
    hashlib.sha256(b"auditor token").digest()).decode()[:43]


def readers_ring() -> KeyRing:
    """The default keyring (agent:alice of acme) and auditor:ops of tenant *."""
    return KeyRing([*default_ring().principals(),
                    Principal("auditor:ops", "*", AUDITOR.public_key, frozenset({"auditor"}))])


def api_auth() -> ApiAuth:
    """Readers of the test API: alice (acme) and the auditor (*), each also by token."""
    tokens = TokenTable((TokenEntry(ALICE.key_id, "agent:alice", token_digest(TOKEN)),
                         TokenEntry(AUDITOR.key_id, "auditor:ops", token_digest(AUDIT_TOKEN))))
    return ApiAuth(readers_ring, tokens)


# -- a real ledger: 13 leaves under checkpoints at 5, 10, 13, and leaf 13 not yet published ---


class Ledger:
    def __init__(self, data_dir: Path, chain: list[str], tail: bytes) -> None:
        self.data_dir, self.chain, self.tail = data_dir, chain, tail
        self.vkey = read_vkey(data_dir)


def build_ledger(root: Path) -> Ledger:
    data_dir = make_ledger(root)
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    seq.submit(envelopes(5))
    chain = lineage_chain()
    seq.submit([env for env, _ in chain])
    seq.submit(envelopes(3, 5))
    seq.close()
    tail = envelopes(1, 8)[0]
    seq = open_ledger(data_dir, keyring_verifier(default_ring()), checkpoint_interval=3600)
    seq.submit([tail])                       # sequenced, not published
    seq.close()
    return Ledger(data_dir, [event_id for _, event_id in chain], tail)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return build_ledger(tmp_path_factory.mktemp("api-ledger"))


# -- the fake backend ------------------------------------------------------------------------


class FakeBackend:
    """Verifies with the real envelope code, keeps decisions in a dict."""

    def __init__(self, data_dir: Path, vkey: str) -> None:
        self.data_dir, self._vkey = data_dir, vkey
        self.submitted: list[bytes] = []
        self.decisions: dict[str, bytes] = {}
        self.components = {"broker": True, "ledger": True, "processor": True}
        self.fail: BaseException | None = None
        self.hang = False
        self.wait_cap = float("inf")   # the schema fuzzer asks for waits of up to 30 s
        self.waiting: asyncio.Event | None = None
        self._arrived: dict[str, asyncio.Event] = {}

    async def submit(self, envelope: bytes) -> Submitted:
        if self.fail is not None:
            raise self.fail
        event = verify_envelope(envelope, default_ring(), T0)
        self.submitted.append(envelope)
        return Submitted(event.event_id, event.kind, "gov.requests")

    async def decision(self, subject_id: str, wait_s: float) -> bytes | None:
        if self.fail is not None:
            raise self.fail
        if self.hang:
            await asyncio.Event().wait()
        if subject_id not in self.decisions and wait_s > 0:
            arrived = self._arrived.setdefault(subject_id, asyncio.Event())
            if self.waiting is not None:
                self.waiting.set()
            try:
                await asyncio.wait_for(arrived.wait(), min(wait_s, self.wait_cap))
            except TimeoutError:
                return None
        return self.decisions.get(subject_id)

    def publish(self, subject_id: str, envelope: bytes) -> None:
        self.decisions[subject_id] = envelope
        if subject_id in self._arrived:
            self._arrived[subject_id].set()

    def ledger_dir(self) -> Path:
        return self.data_dir

    def vkey(self) -> str:
        return self._vkey

    async def ready(self) -> dict[str, bool]:
        if self.fail is not None:
            raise self.fail
        return dict(self.components)


@pytest.fixture
def backend(ledger: Ledger) -> FakeBackend:
    return FakeBackend(ledger.data_dir, ledger.vkey)


class Client:
    """Synchronous calls into the ASGI app (httpx's ASGI transport, no network). Requests
    are signed by agent:alice (tenant acme, whose events the test ledger holds) unless a
    call says otherwise (``auth=None``: no credential)."""

    def __init__(self, backend: FakeBackend, metrics: Metrics | None = None) -> None:
        self.app = make_api(backend, metrics, auth=api_auth())

    def session(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://api.test", auth=SignedRequests(ALICE))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.session() as session:
                return await session.request(method, url, **kwargs)
        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, body: bytes, **kwargs: Any) -> httpx.Response:
        headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
        return self.request("POST", url, content=body, headers=headers, **kwargs)


@pytest.fixture
def api(backend: FakeBackend) -> Client:
    return Client(backend)


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"reason", "detail"}, body
    return str(body["reason"])


def decision_envelope(kind: str, subject: str) -> tuple[bytes, str]:
    if kind == "grant":
        return grant(subject, subject, None, 0, "api-test-grant-001")
    if kind == "deny":
        return sign_event_with_id(AuthorizationDenied(
            signer="govledger:authority", tenant="acme", nonce="api-test-deny-0001",
            issued_at=T0, request_id=subject, reasons=(Reason.POLICY_DENY,)), AUTHORITY)
    return sign_event_with_id(ExecutionRefused(
        signer="govledger:authority", tenant="acme", nonce="api-test-refused-1", issued_at=T0,
        artifact_id=RID, root=RID, execution_id=subject,
        reasons=(Reason.ARTIFACT_REVOKED, Reason.SCOPE_MISMATCH)), AUTHORITY)


# -- every route ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "/v1/approvals?tenant=acme&tenant=globex",       # which tenant? refused, not guessed
    f"/v1/decisions/{RID}?wait=0&wait=30",
    "/v1/checkpoint?x=1&x=",
])
def test_a_query_parameter_given_twice_is_refused(api: Client, url: str) -> None:
    response = api.get(url)
    assert (response.status_code, error_of(response)) == (422, "MALFORMED")
    assert "given more than once" in response.json()["detail"]


def test_distinct_query_parameters_are_served(api: Client) -> None:
    assert api.get("/v1/approvals?tenant=acme&pending=true").status_code == 200


# -- POST /v1/events -----------------------------------------------------------------------


def test_submit_passes_the_exact_bytes_and_answers_202(api: Client,
                                                       backend: FakeBackend) -> None:
    data = signed_request(nonce="api-submit-000001")
    response = api.post("/v1/events", data)
    assert response.status_code == 202
    event = verify_envelope(data, default_ring(), T0)
    assert response.json() == {"event_id": event.event_id, "kind": "AuthorizationRequested",
                               "topic": "gov.requests"}
    assert backend.submitted == [data]


@pytest.mark.parametrize(("mutate", "status", "reason"), [
    (lambda d: d.replace(b'"signatures":[', b'"signatures":[{"keyid":"a","sig":"b"},'), 400,
     "MALFORMED"),
    (lambda d: b"{" + b" " + d[1:], 400, "NON_CANONICAL"),
    (lambda d: b"not json", 400, "MALFORMED"),
    (lambda d: b"", 400, "MALFORMED"),
    (lambda d: d.replace(b".authorization-requested.", b".authorization-bogus.", 1), 400,
     "UNSUPPORTED_VERSION"),
])
def test_bad_envelope_bytes_are_400_with_the_reason(api: Client, backend: FakeBackend,
                                                    mutate: Any, status: int,
                                                    reason: str) -> None:
    response = api.post("/v1/events", mutate(signed_request()))
    assert (response.status_code, error_of(response)) == (status, reason)
    assert backend.submitted == []


def test_signature_and_key_failures_are_422(api: Client) -> None:
    good = signed_request(nonce="api-submit-000002")
    flipped = bytearray(good)
    at = good.index(b'"sig":"') + 10
    flipped[at] = ord("B") if flipped[at] != ord("B") else ord("C")
    response = api.post("/v1/events", bytes(flipped))
    assert (response.status_code, error_of(response)) == (422, "SIGNATURE_INVALID")
    response = api.post("/v1/events", sign_event_with_id(
        AuthorizationDenied(signer="agent:mallory", tenant="acme", nonce="api-mallory-0001",
                            issued_at=T0, request_id=RID, reasons=(Reason.REPLAY,)),
        MALLORY)[0])
    assert (response.status_code, error_of(response)) == (422, "KEY_UNKNOWN")


def test_oversized_body_is_413_before_the_backend_sees_it(api: Client,
                                                          backend: FakeBackend) -> None:
    response = api.post("/v1/events", b"{" + b" " * MAX_ENVELOPE_BYTES + b"}")
    assert (response.status_code, error_of(response)) == (413, "OVERSIZED")
    assert backend.submitted == []


def test_streamed_oversized_body_is_cut_off_without_reading_it_all(api: Client) -> None:
    chunk, sent = b"x" * 65536, []

    async def body() -> AsyncIterator[bytes]:
        for n in range(100):           # 6.5 MB offered, no Content-Length
            sent.append(n)
            yield chunk

    async def go() -> httpx.Response:
        async with api.session() as session:
            return await session.post("/v1/events", content=body(), auth=None,
                                      headers={"content-type": "application/json"})
    response = asyncio.run(go())
    assert (response.status_code, error_of(response)) == (413, "OVERSIZED")
    assert len(sent) <= MAX_ENVELOPE_BYTES // len(chunk) + 2


def test_wrong_media_type_is_415_and_missing_one_is_accepted(api: Client) -> None:
    data = signed_request(nonce="api-submit-000003")
    response = api.post("/v1/events", data, headers={"content-type": "text/plain"})
    assert (response.status_code, error_of(response)) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert api.request("POST", "/v1/events", content=data).status_code == 202


def test_broker_down_is_503_with_retry_after(api: Client, backend: FakeBackend) -> None:
    backend.fail = Unavailable("broker is down")
    response = api.post("/v1/events", signed_request())
    assert (response.status_code, error_of(response)) == (503, "UNAVAILABLE")
    assert response.headers["retry-after"] == "1"


def test_unexpected_backend_error_is_500_without_a_decision(api: Client,
                                                           backend: FakeBackend) -> None:
    backend.fail = RuntimeError("bug")
    for response in (api.post("/v1/events", signed_request()),
                     api.get(f"/v1/decisions/{RID}")):
        assert (response.status_code, error_of(response)) == (500, "INTERNAL")


# -- GET /v1/decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "allow", "reasons"), [
    ("grant", True, []), ("deny", False, ["POLICY_DENY"]),
    ("refused", False, ["ARTIFACT_REVOKED", "SCOPE_MISMATCH"])])
def test_decision_is_served_with_its_summary(api: Client, backend: FakeBackend, kind: str,
                                             allow: bool, reasons: list[str]) -> None:
    envelope, event_id = decision_envelope(kind, RID)
    backend.publish(RID, envelope)
    response = api.get(f"/v1/decisions/{RID}")
    assert response.status_code == 200
    body = response.json()
    assert body["envelope"].encode() == envelope
    assert (body["event_id"], body["allow"], body["reasons"]) == (event_id, allow, reasons)
    verify_envelope(body["envelope"].encode(), default_ring(), T0)


def test_no_decision_is_404_pending(api: Client) -> None:
    response = api.get(f"/v1/decisions/{RID}", params={"wait": "0.05"})
    assert (response.status_code, error_of(response)) == (404, "PENDING")


def test_decision_arriving_during_the_wait_is_returned(api: Client,
                                                       backend: FakeBackend) -> None:
    envelope, _ = decision_envelope("grant", RID)

    async def go() -> httpx.Response:
        backend.waiting = asyncio.Event()
        async with api.session() as session:
            call = asyncio.create_task(session.get(f"/v1/decisions/{RID}?wait=10"))
            await backend.waiting.wait()
            backend.publish(RID, envelope)
            return await call
    response = asyncio.run(go())
    assert response.status_code == 200
    assert response.json()["allow"] is True


@pytest.mark.parametrize("url", [
    f"/v1/decisions/{RID.upper()}", f"/v1/decisions/{RID[:-1]}", f"/v1/decisions/{RID}0",
    f"/v1/decisions/{RID}?wait=31", f"/v1/decisions/{RID}?wait=-1",
    f"/v1/decisions/{RID}?wait=nan", f"/v1/decisions/{RID}?wait=soon"])
def test_bad_subject_or_wait_is_422(api: Client, url: str) -> None:
    response = api.get(url)
    assert (response.status_code, error_of(response)) == (422, "MALFORMED")


@pytest.mark.parametrize("bad", ["other subject", "not a decision", "garbage"])
def test_backend_handing_over_a_wrong_decision_is_500_never_a_grant(
        api: Client, backend: FakeBackend, bad: str) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    envelope = {"other subject": decision_envelope("grant", other)[0],
                "not a decision": signed_request(), "garbage": b"\xff{"}[bad]
    backend.publish(RID, envelope)
    response = api.get(f"/v1/decisions/{RID}")
    assert (response.status_code, error_of(response)) == (500, "INTERNAL")
    assert "allow" not in response.json()


def test_hung_decision_lookup_is_503(api: Client, backend: FakeBackend,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ledger.server.api.DECISION_GRACE_S", 0.05)
    backend.hang = True
    response = api.get(f"/v1/decisions/{RID}")
    assert (response.status_code, error_of(response)) == (503, "UNAVAILABLE")


def test_summarize_refuses_a_decision_about_another_subject() -> None:
    envelope, _ = decision_envelope("deny", RID)
    assert summarize_decision(RID, envelope).allow is False
    with pytest.raises(Exception, match="another subject"):
        summarize_decision(RID.replace("a", "b"), envelope)


# -- checkpoint, vkey, entries ---------------------------------------------------------------


def test_checkpoint_is_the_exact_signed_note(api: Client, ledger: Ledger) -> None:
    response = api.get("/v1/checkpoint")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    with LedgerStore(ledger.data_dir / "ledger.db") as store:
        latest = store.latest_checkpoint()
    assert latest is not None
    assert response.content == latest[1].encode() and response.text.endswith("\n")
    assert verify_checkpoint(response.text, parse_vkey(ledger.vkey), ORIGIN).size == 13


def test_vkey_is_served_as_text(api: Client, ledger: Ledger) -> None:
    response = api.get("/v1/vkey")
    assert (response.status_code, response.text) == (200, ledger.vkey + "\n")


def test_checkpoint_that_does_not_verify_under_the_vkey_is_never_served(
        ledger: Ledger) -> None:
    api = Client(FakeBackend(ledger.data_dir, build_vkey(ORIGIN, MALLORY.public_key)))
    response = api.get("/v1/checkpoint")
    assert (response.status_code, error_of(response)) == (500, "INTERNAL")
    assert "govledger.test/log\n13\n" not in response.text


def test_entry_by_index_and_by_event_id(api: Client, ledger: Ledger) -> None:
    by_index = api.get("/v1/entries/13")
    assert by_index.status_code == 200
    body = by_index.json()
    assert base64.b64decode(body["leaf"]) == ledger.tail
    assert body["leaf_hash"] == hashlib.sha256(b"\x00" + ledger.tail).hexdigest()
    by_id = api.get("/v1/entries", params={"event_id": body["event_id"]})
    assert by_id.json() == body
    assert api.get("/v1/entries", params={"event_id": ledger.chain[2]}).json()["index"] == 7


@pytest.mark.parametrize(("url", "status"), [
    ("/v1/entries/14", 404), (f"/v1/entries?event_id={RID}", 404), ("/v1/entries/-1", 422),
    ("/v1/entries/x", 422), ("/v1/entries?event_id=abc", 422), ("/v1/entries", 422),
    (f"/v1/entries/{2**64}", 422)])
def test_absent_or_invalid_entries(api: Client, url: str, status: int) -> None:
    response = api.get(url)
    assert response.status_code == status
    assert error_of(response) == ("NOT_FOUND" if status == 404 else "MALFORMED")


def test_missing_ledger_is_503_and_metrics_still_serve(tmp_path: Path, ledger: Ledger) -> None:
    api = Client(FakeBackend(tmp_path / "nowhere", ledger.vkey))
    for url in ("/v1/checkpoint", "/v1/entries/0", "/v1/proofs/inclusion?index=0"):
        response = api.get(url)
        assert (response.status_code, error_of(response)) == (503, "UNAVAILABLE"), url
    assert api.get("/metrics").status_code == 200


def test_cached_readers_see_what_the_sequencer_appends_later(tmp_path: Path) -> None:
    api = Client(FakeBackend(tmp_path / "ledger", "unused"))
    assert api.get("/v1/entries/0").status_code == 503          # no ledger yet
    data_dir = make_ledger(tmp_path)
    api = Client(FakeBackend(data_dir, read_vkey(data_dir)))
    assert api.get("/v1/entries/0").status_code == 404
    assert "\n0\n" in api.get("/v1/checkpoint").text
    seq = open_ledger(data_dir, keyring_verifier(default_ring()))
    seq.submit(envelopes(3))
    assert api.get("/v1/entries/2").status_code == 200       # same app, same threads
    assert "\n3\n" in api.get("/v1/checkpoint").text
    seq.submit(envelopes(2, 3))
    seq.close()
    bundle = api.get("/v1/proofs/inclusion", params={"index": 4}).json()
    assert verify_bundle(bundle, read_vkey(data_dir)).tree_size == 5


# -- proofs -----------------------------------------------------------------------------------


def test_inclusion_bundle_is_the_library_bundle_and_verifies(api: Client,
                                                             ledger: Ledger) -> None:
    by_index = api.get("/v1/proofs/inclusion", params={"index": 7}).json()
    assert by_index == prove_inclusion(ledger.data_dir, index=7)
    assert verify_bundle(by_index, ledger.vkey).tree_size == 13
    by_id = api.get("/v1/proofs/inclusion", params={"event_id": ledger.chain[2]}).json()
    assert by_id == by_index


@pytest.mark.parametrize(("query", "status", "reason"), [
    ("index=13", 404, "NOT_PUBLISHED"), ("index=14", 404, "NOT_FOUND"),
    (f"event_id={RID}", 404, "NOT_FOUND"), ("", 422, "MALFORMED"),
    (f"index=1&event_id={RID}", 422, "MALFORMED"), ("index=-1", 422, "MALFORMED")])
def test_inclusion_errors(api: Client, query: str, status: int, reason: str) -> None:
    response = api.get(f"/v1/proofs/inclusion?{query}")
    assert (response.status_code, error_of(response)) == (status, reason)


def test_consistency_bundle_is_the_library_bundle_and_verifies(api: Client,
                                                               ledger: Ledger) -> None:
    bundle = api.get("/v1/proofs/consistency", params={"old_size": 5, "new_size": 10}).json()
    assert bundle == prove_consistency(ledger.data_dir, 5, 10)
    assert verify_bundle(bundle, ledger.vkey).tree_size == 10
    latest = api.get("/v1/proofs/consistency", params={"old_size": 10}).json()
    assert latest["new_size"] == 13
    verify_bundle(latest, ledger.vkey)


@pytest.mark.parametrize(("query", "status"), [
    ("old_size=10&new_size=5", 422), ("old_size=6", 404), ("old_size=5&new_size=14", 404),
    ("old_size=-1", 422), ("new_size=5", 422)])
def test_consistency_errors(api: Client, query: str, status: int) -> None:
    assert api.get(f"/v1/proofs/consistency?{query}").status_code == status


def test_lineage_bundle_verifies_back_to_the_root(api: Client, ledger: Ledger) -> None:
    response = api.get("/v1/proofs/lineage", params={"event_id": ledger.chain[-1]})
    assert response.json() == prove_lineage(ledger.data_dir, ledger.chain[-1])
    proved = verify_bundle(response.json(), ledger.vkey, SignerKeys(keyring=default_ring()))
    assert proved.event_ids == tuple(reversed(ledger.chain))
    response = api.get("/v1/proofs/lineage", params={"event_id": RID})
    assert (response.status_code, error_of(response)) == (404, "NOT_FOUND")


# -- health, readiness, metrics -----------------------------------------------------------------


def test_healthz_and_readyz(api: Client, backend: FakeBackend) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {**backend.components,
                                                      "ledger_verified": True})
    backend.components["processor"] = False
    not_ready = api.get("/readyz")
    assert (not_ready.status_code, not_ready.json()["processor"]) == (503, False)
    backend.fail = Unavailable("no broker")
    assert api.get("/readyz").status_code == 503


def test_nothing_is_served_from_a_ledger_that_failed_the_sequencers_check(
        tmp_path: Path) -> None:
    """A reader in another process (``govledger api`` alone, ``ledger prove``) serves only
    after the sequencer's start-up check passed: it cleared the marker and never set it."""
    built = build_ledger(tmp_path)
    conn = sqlite3.connect(built.data_dir / "ledger.db")
    conn.execute("DROP TRIGGER leaves_append_only_update")
    conn.execute("UPDATE leaves SET event_id = zeroblob(32) WHERE idx = 2")
    conn.commit()
    conn.close()
    with pytest.raises(ProofError, match="at leaf 2:"):
        open_ledger(built.data_dir, keyring_verifier(default_ring()))
    api = Client(FakeBackend(built.data_dir, built.vkey))
    for url in ("/v1/entries/0", "/v1/checkpoint", "/v1/proofs/inclusion?index=0",
                "/v1/proofs/consistency?old_size=5", f"/v1/proofs/lineage?event_id={RID}"):
        response = api.get(url)
        assert (response.status_code, error_of(response)) == (503, "UNAVAILABLE"), url
    ready = api.get("/readyz")
    assert (ready.status_code, ready.json()["ledger_verified"]) == (503, False)
    with pytest.raises(Unavailable, match="not verified"):
        prove_inclusion(built.data_dir, index=0)


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{want}}}" if labels else name) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_metrics_count_requests_by_route_template_and_read_the_ledger(
        backend: FakeBackend) -> None:
    metrics = Metrics()
    api = Client(backend, metrics)
    for index in (1, 2, 99):
        api.get(f"/v1/entries/{index}")
    metrics.observe_decision("deny", ["POLICY_DENY"], 0.004)
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = "/v1/entries/{index}"
    assert metric(text, "govledger_http_requests_total", route=route, status="200") == 2
    assert metric(text, "govledger_http_requests_total", route=route, status="404") == 1
    assert metric(text, "govledger_http_request_seconds_count", route=route) == 3
    assert metric(text, "govledger_decisions_total", outcome="deny",
                  reason="POLICY_DENY") == 1
    assert metric(text, "govledger_ledger_size") == 14
    assert metric(text, "govledger_checkpoint_size") == 13
    assert api.app.state.metrics is metrics


def test_each_app_has_its_own_registry(backend: FakeBackend) -> None:
    first, second = Client(backend), Client(backend)
    first.get("/healthz")
    assert metric(first.get("/metrics").text, "govledger_http_requests_total",
                  route="/healthz", status="200") == 1
    assert metric(second.get("/metrics").text, "govledger_http_requests_total",
                  route="/healthz", status="200") is None


def test_openapi_documents_every_route_with_error_models(api: Client) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) == {"/v1/events", "/v1/decisions/{subject_id}", "/v1/checkpoint",
                          "/v1/vkey", "/v1/entries/{index}", "/v1/entries",
                          "/v1/proofs/inclusion", "/v1/proofs/consistency",
                          "/v1/proofs/lineage", "/v1/approvals",
                          "/v1/approvals/{request_id}", "/healthz", "/readyz", "/metrics",
                          "/checkpoint", "/tile/{rest}"}         # C2SP tlog-tiles
    for operations in paths.values():
        for operation in operations.values():
            assert operation["summary"]
    post = paths["/v1/events"]["post"]
    assert {"202", "400", "413", "422", "503"} <= set(post["responses"])
    assert "requestBody" in post
    for code in ("404", "422"):
        ref = paths["/v1/decisions/{subject_id}"]["get"]["responses"][code]
        assert ref["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
