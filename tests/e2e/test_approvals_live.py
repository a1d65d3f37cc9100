"""Human approval on the running service (`govledger up`: embedded broker, processor child,
sequencer, HTTP API): a request that waits, two approvers completing the quorum, the
approved grant's evidence bundle verified offline with its approvals, and a SIGKILL while
pending whose deadline passes during the downtime."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ledger.core.approval_events import ApprovalGiven, ApprovalRefused
from ledger.core.bundles import verify_bundle
from ledger.core.envelope import parse_envelope, parse_payload, sign_event
from ledger.core.events import AuthorizationGranted, AuthorizationRequested
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.core.signers import SignerKeys
from ledger.errors import ProofError
from ledger.keyfiles import generate_keypair, load_signer_keys
from ledger.log.ledger_dir import read_vkey
from ledger.sdk.httpsig import SignedRequests
from tests.factories import request, seeded_signer
from tests.service_support import ServiceProcess, make_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
GOVLEDGER = str(Path(sys.executable).parent / "govledger")
PAYER = seeded_signer("payer")
ANN = seeded_signer("ann")
BEN = seeded_signer("ben")
PEOPLE = [
    Principal("agent:payer", "acme", PAYER.public_key,
              frozenset({"requester", "payments", "payments-large"})),
    *(Principal(who, "acme", key.public_key, frozenset({"payments-approver", "reader"}))
      for who, key in (("human:ann", ANN), ("human:ben", BEN))),
]
# A short deadline for the SIGKILL test (the shipped example waits 15 minutes).
QUICK = """@id("write-vault-approved")
@approval("role=payments-approver,k=2,ttl=5")
permit (principal, action == Action::"write", resource in Resource::"vault/*")
when { principal.roles.contains("payments-large") };
"""


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def transfer(nonce: str, amount: int = 50_000) -> AuthorizationRequested:
    asked = request(signer="agent:payer", actions=("transfer",), nonce=nonce,
                    resource="payments/acme/invoices/*", single_use=True, issued_at=now(),
                    ttl=timedelta(minutes=30))
    return asked.model_copy(update={"context": {"amount": amount, "currency": "EUR"}})


def approve(key: Signer, who: str, request_id: str, nonce: str, *,
            refuse: bool = False) -> bytes:
    kind = ApprovalRefused if refuse else ApprovalGiven
    return sign_event(kind(signer=who, tenant="acme", nonce=nonce, issued_at=now(),
                           request_id=request_id, root=request_id), key)


def payer_http(api: str) -> httpx.Client:
    """The API as the payer sees it (its requests' decisions, its tenant's ledger)."""
    return httpx.Client(base_url=api, timeout=60, auth=SignedRequests(PAYER))


def post(http: httpx.Client, envelope: bytes, wait: float) -> httpx.Response:
    answer = http.post("/v1/events", content=envelope, params={"wait": wait})
    assert answer.status_code in (200, 202), answer.text
    return answer


def decided(http: httpx.Client, subject: str) -> dict[str, object]:
    answer = http.get(f"/v1/decisions/{subject}", params={"wait": 30})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_two_approvers_grant_and_the_bundle_holds_the_approvals(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", PEOPLE, genesis=False).root
    service = ServiceProcess(data)
    try:
        with payer_http(service.api) as http:
            pending = post(http, sign_event(transfer("payer-nonce-000001"), PAYER), 2)
            assert pending.status_code == 202  # waiting for people, not decided
            rid = pending.json()["event_id"]
            first = post(http, approve(ANN, "human:ann", rid, "ann-nonce-0000001"), 1)
            assert first.status_code == 202  # counted, nothing to answer yet
            second = post(http, approve(BEN, "human:ben", rid, "ben-nonce-0000001"), 0)
            grant = decided(http, rid)
            assert grant["kind"] == "AuthorizationGranted" and grant["allow"] is True
            envelope = parse_envelope(str(grant["envelope"]).encode())
            event = parse_payload(envelope.payload_type, envelope.payload)
            assert isinstance(event, AuthorizationGranted)
            meta = event.artifact.governance
            assert (meta["approval.1"], meta["approval.2"]) == (first.json()["event_id"],
                                                                 second.json()["event_id"])
            late = post(http, approve(ANN, "human:ann", rid, "ann-nonce-0000002"), 20)
            assert late.status_code == 200
            assert late.json()["decision"]["reasons"] == ["NOT_PENDING"]
            bundle = lineage_of(http, str(grant["event_id"]))
    finally:
        assert service.terminate() == 0, service.output()
    # The evidence verifies offline with its approvals in it; without one it does not.
    keys = load_signer_keys(keyring=data / "keyring.json")
    vkey = read_vkey(data)
    verified = verify_bundle(bundle, vkey, keys)
    assert verified.event_ids[0] == grant["event_id"] and verified.event_ids[-1] == rid
    approvals = bundle["approvals"]
    assert isinstance(approvals, list) and len(approvals) == 3  # required + 2 given
    for drop in range(3):
        partial = {**bundle, "approvals": approvals[:drop] + approvals[drop + 1:]}
        with pytest.raises(ProofError, match="lacks the approvals"):
            verify_bundle(partial, vkey, keys)
    # an approver who does not hold the role (in the keyring the verifier trusts) is no vote
    assert keys.keyring is not None
    demoted = KeyRing(replace(p, roles=frozenset({"reader"})) if p.identity == "human:ben"
                      else p for p in keys.keyring.principals())
    with pytest.raises(ProofError, match="1 approvers with role payments-approver"):
        verify_bundle(bundle, vkey, SignerKeys(keyring=demoted))
    # a restart checks the journal against the ledger: the grant is journaled with the
    # approval that completed the quorum, not with its request, and that is consistent
    service = ServiceProcess(data)
    assert service.terminate() == 0, service.output()


def test_sigkill_while_pending_and_the_deadline_passes_during_downtime(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", PEOPLE, genesis=False).root
    (data / "policies" / "quick.cedar").write_text(QUICK)
    service = ServiceProcess(data)
    asked = request(signer="agent:payer", actions=("write",), resource="vault/keys",
                    nonce="payer-nonce-000002", issued_at=now(), ttl=timedelta(minutes=30))
    try:
        with payer_http(service.api) as http:
            rid = post(http, sign_event(asked, PAYER), 0).json()["event_id"]
            counted = post(http, approve(ANN, "human:ann", rid, "ann-nonce-0000003"), 0.5)
            assert counted.status_code == 202, counted.text
            # the processor journaled both before the API saw them sequenced: wait for the
            # approval's leaf, so the kill comes after it was decided
            wait_for_leaf(http, counted.json()["event_id"])
    finally:
        service.kill()
    deadline = asked.issued_at + timedelta(seconds=6)  # the deadline is arrival + 5 s
    while now() <= deadline:  # the deadline passes while nothing runs
        time.sleep(0.2)
    service = ServiceProcess(data)
    try:
        with payer_http(service.api) as http:
            # the processor ends it on start, before any input arrives
            ended = decided(http, rid)
            assert (ended["allow"], ended["reasons"]) == (False, ["APPROVAL_EXPIRED"])
            late = post(http, approve(BEN, "human:ben", rid, "ben-nonce-0000003"), 20)
            assert late.json()["decision"]["reasons"] == ["APPROVAL_EXPIRED"]
    finally:
        assert service.terminate() == 0, service.output()


def lineage_of(http: httpx.Client, event_id: str, timeout_s: float = 30) -> dict[str, object]:
    """The lineage bundle of ``event_id`` once it (and its approvals) are published."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        answer = http.get("/v1/proofs/lineage", params={"event_id": event_id})
        if answer.status_code == 200:
            return answer.json()  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no lineage bundle for {event_id}: {answer.text}")


def wait_for_leaf(http: httpx.Client, event_id: str, timeout_s: float = 30) -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if http.get("/v1/entries", params={"event_id": event_id}).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{event_id} never became a leaf")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, *args], capture_output=True, text=True, timeout=120)


def listed_until(count: int, api: list[str], timeout_s: float = 30) -> list[dict[str, object]]:
    """``govledger approvals list`` once it lists ``count`` requests (both pending answers
    sequenced: they travel on different partitions, so in no fixed order)."""
    give_up = time.monotonic() + timeout_s
    while True:
        done = cli("approvals", "list", "--json", *api)
        assert done.returncode == 0, done.stdout + done.stderr
        listed: list[dict[str, object]] = json.loads(done.stdout)["approvals"]
        if len(listed) >= count or time.monotonic() > give_up:
            return listed
        time.sleep(0.1)


def test_people_approve_and_refuse_from_the_command_line(tmp_path: Path) -> None:
    cara, cara_key, _ = generate_keypair("cara", tmp_path)
    dan, dan_key, _ = generate_keypair("dan", tmp_path)
    people = [*PEOPLE, *(Principal(who, "acme", signer.public_key,
                                   frozenset({"payments-approver", "reader"}))
                         for who, signer in (("human:cara", cara), ("human:dan", dan)))]
    data = make_data_dir(tmp_path / "data", people, genesis=False).root
    service = ServiceProcess(data)
    try:
        api = ["--api", service.api, "--key", str(cara_key)]
        with payer_http(service.api) as http:
            paid = post(http, sign_event(transfer("payer-nonce-000010"), PAYER), 0)
            kept = post(http, sign_event(transfer("payer-nonce-000011", 20_000), PAYER), 0)
            rid, other = paid.json()["event_id"], kept.json()["event_id"]
            listed = listed_until(2, api)
            assert {v["request_id"] for v in listed} == {rid, other}
            assert {(v["state"], v["k"], v["role"]) for v in listed} == {
                ("pending", 2, "payments-approver")}
            # one approval of two: sent and counted, the request still waits (exit 4)
            own = cli("approvals", "approve", rid, "--as", "human:cara", *api)
            assert own.returncode == 4, own.stdout + own.stderr
            dan = ["--api", service.api, "--key", str(dan_key), "--as", "human:dan"]
            done = cli("approvals", "approve", rid, "--reason", "invoice checked", *dan)
            assert done.returncode == 0 and done.stdout.startswith("GRANTED"), done.stdout
            again = cli("approvals", "approve", rid, *dan)
            assert again.returncode == 1 and "NOT_PENDING" in again.stdout, again.stdout
            refused = cli("approvals", "refuse", other, "--reason", "not this week", *dan)
            assert refused.returncode == 0, refused.stdout + refused.stderr
            assert refused.stdout.startswith("DENIED APPROVAL_REFUSED"), refused.stdout
            wait_for_leaf(http, str(decided(http, other)["event_id"]))
            shown = json.loads(cli("approvals", "show", other, "--json", *api).stdout)
            assert (shown["state"], shown["reasons"]) == ("denied", ["APPROVAL_REFUSED"])
            assert [a["signer"] for a in shown["approvals"]] == ["human:dan"]
            assert cli("approvals", "show", "0" * 64, *api).returncode == 1
    finally:
        assert service.terminate() == 0, service.output()
