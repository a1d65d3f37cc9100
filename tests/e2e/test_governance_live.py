"""Governance applied live on the running service (embedded broker, real ledger), through the
CLI an operator uses: a key registered while the service runs, a refusal in the ledger, the
kill switch for a tenant, a policy published, and the state at a leaf read back offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.envelope import sign_event
from ledger.core.execution_events import ExecutionRequested
from ledger.core.governance_events import TenantSuspended
from ledger.datadir import example_policies
from ledger.keyfiles import generate_keypair
from ledger.log.ledger_dir import DB_NAME
from ledger.log.store import LedgerStore
from ledger.sdk.httpsig import SignedRequests
from tests.factories import ALICE, ENV, request
from tests.service_support import RUNNER, Running

pytestmark = pytest.mark.e2e
GOVLEDGER = str(Path(sys.executable).parent / "govledger")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, *args], capture_output=True, text=True, timeout=120)


def submit(http: httpx.Client, envelope: bytes) -> dict[str, object]:
    answer = http.post("/v1/events", content=envelope, params={"wait": 20})
    assert answer.status_code in (200, 422), answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_governance_applies_live_and_reads_back_offline(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    data = tmp_path / "data"
    operator = ["--key", str(data / "keys" / "operator.key"), "--api", running.service.api_url]
    try:
        carol, _, carol_pub = generate_keypair("carol", tmp_path)
        with httpx.Client(base_url=running.service.api_url, timeout=60,
                          auth=SignedRequests(ALICE)) as http:
            # 1. A key nobody registered is refused at the door.
            unknown = sign_event(request(signer="agent:carol", issued_at=now(),
                                         nonce="carol-nonce-00001"), carol)
            assert submit(http, unknown)["reason"] == "KEY_UNKNOWN"

            # 2. Registered live: in force for the next request, named in its decision.
            done = cli("principal", "register", "agent:carol", "--tenant", "acme",
                       "--public-key", str(carol_pub), "--role", "requester", "--role",
                       "reader", *operator)
            assert done.returncode == 0 and done.stdout.startswith("APPLIED"), done
            granted = submit(http, sign_event(request(signer="agent:carol", issued_at=now(),
                                                      nonce="carol-nonce-00002"), carol))
            decision = granted["decision"]
            assert decision["allow"] is True, decision  # type: ignore[index]

            # 3. A governance event by a non-admin: refused, and the refusal is a decision.
            forged = sign_event(TenantSuspended(signer="agent:alice", tenant="acme",
                                                nonce="not-an-admin-0001", issued_at=now()),
                                ALICE)
            refused = submit(http, forged)["decision"]
            assert refused["reasons"] == ["NOT_ADMIN"]  # type: ignore[index]

            # 4. The kill switch: requests denied, the outstanding artifact refused.
            alice_grant = submit(http, sign_event(request(issued_at=now(),
                                                          nonce="alice-nonce-00001"), ALICE))
            artifact_id = alice_grant["decision"]["event_id"]  # type: ignore[index]
            suspended = cli("tenant", "suspend", "acme", "--reason", "incident 42", *operator)
            assert suspended.returncode == 0, suspended
            later = submit(http, sign_event(request(issued_at=now(), nonce="alice-nonce-00002"),
                                            ALICE))["decision"]
            assert later["reasons"] == ["TENANT_SUSPENDED"]  # type: ignore[index]
            execution = sign_event(ExecutionRequested(
                signer="runner:1", tenant="acme", nonce="runner-nonce-0001", issued_at=now(),
                artifact_id=artifact_id, root=alice_grant["event_id"], action="read",
                resource="db/orders/1", environment=ENV), RUNNER)
            verdict = submit(http, execution)["decision"]
            assert verdict["kind"] == "ExecutionRefused"  # type: ignore[index]
            assert verdict["reasons"] == ["TENANT_SUSPENDED"]  # type: ignore[index]
            assert cli("tenant", "resume", "acme", *operator).returncode == 0

            # 5. A policy published live decides the next request; an invalid one is refused.
            policies = tmp_path / "policies"
            shutil.copytree(example_policies(), policies)
            (policies / "extra.cedar").write_text(
                '@id("read-reports")\npermit (principal, action == Action::"read", '
                'resource in Resource::"reports/*");\n')
            published = cli("policy", "publish", str(policies), "--version", "2", *operator)
            assert published.returncode == 0, published
            report = submit(http, sign_event(request(issued_at=now(), nonce="alice-nonce-00003",
                                                     resource="reports/q4"), ALICE))
            assert report["decision"]["allow"] is True  # type: ignore[index]
            (policies / "broken.cedar").write_text('permit (principal, action == '
                                                   'Action::"nosuch", resource);\n')
            broken = cli("policy", "publish", str(policies), "--version", "3", *operator)
            assert broken.returncode == 2 and "broken.cedar" in broken.stderr, broken

        # 6. Offline, from the ledger alone: the state after the suspension's leaf.
        with LedgerStore(data / DB_NAME) as store:
            # two TenantSuspended leaves: the forged one (refused) and the operator's
            suspensions = {leaf.event_id for leaf in store.iter_kinds(["TenantSuspended"])}
            assert len(suspensions) == 2
            in_force = next(leaf.index for leaf in store.iter_kinds(["GovernanceApplied"])
                            if leaf.parent_ref in suspensions)
        state = cli("governance", "state", "--data", str(data), "--at", str(in_force),
                    "--json", "--evidence", str(tmp_path / "used.json"))
        assert state.returncode == 0, state
        summary = json.loads(state.stdout)
        assert summary["suspended_tenants"] == ["acme"]
        assert "agent:carol" in {p["identity"] for p in summary["principals"]}
        bundles = json.loads((tmp_path / "used.json").read_text())
        assert len(bundles) == 2 * summary["position"]
        first = tmp_path / "first.json"
        first.write_text(json.dumps(bundles[0]))
        verified = cli("ledger", "verify", str(first), "--vkey", str(data / "ledger.vkey"))
        assert verified.returncode == 0, verified
    finally:
        running.stop()
