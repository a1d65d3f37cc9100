"""Shadow mode on the real embedded broker (issue 13 item 5): a policy published in shadow
mode while the service runs; decisions carry its outcome; ``/metrics`` and ``govledger policy
shadow-report`` count agreements and disagreements by policy id; a promotion ends it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.governance_events import PolicyPromoted, PolicyPublished
from ledger.datadir import DataDir
from ledger.keyfiles import load_signer
from ledger.log.governance import OPERATOR_IDENTITY
from ledger.log.store import LedgerStore
from ledger.sdk.client import Client
from ledger.server.governance_tools import policy_payload
from tests.factories import ALICE, request
from tests.service_support import Running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
GOVLEDGER = str(Path(sys.executable).parent / "govledger")
READ_ANYTHING = ('@id("read-anything")\npermit (principal, action == Action::"read", '
                 'resource);\n')


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    service = Running(tmp_path / "data")
    try:
        yield service
    finally:
        service.stop()


def shadow_files(data: Path, scratch: Path) -> tuple[dict[str, str], str]:
    policies = scratch / "policies"
    shutil.copytree(DataDir(data).policies, policies)
    (policies / "read-anything.cedar").write_text(READ_ANYTHING)
    return policy_payload(policies)


def report(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, "policy", "shadow-report", "--data", str(data), *flags],
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_shadow_policy_is_counted_live_and_from_the_ledger(running: Running,
                                                             tmp_path: Path) -> None:
    data = running.settings.data_dir
    operator = load_signer(DataDir(data).operator_key)
    files, digest = shadow_files(data, tmp_path)
    service = running.service

    async def flow() -> list[str]:
        async with Client(running.settings, service.bootstrap, service.keyring) as client:
            published = await client.decision(await client.send("governance", PolicyPublished(
                signer=OPERATOR_IDENTITY, tenant="*", nonce="shadow-publish-0001",
                issued_at=now(), version="2-shadow", policy_digest=digest, files=files,
                mode="shadow"), operator), 30)
            assert published.allow, published.reasons
            ids = []
            for n, resource in enumerate(("files/report", "db/orders/1", "files/other")):
                decided = await client.request(request(
                    nonce=f"shadow-request-{n:04d}", resource=resource, issued_at=now()),
                    ALICE, 30)
                ids.append(decided.verified.event_id)
            promoted = await client.decision(await client.send("governance", PolicyPromoted(
                signer=OPERATOR_IDENTITY, tenant="*", nonce="shadow-promote-0001",
                issued_at=now(), policy_digest=digest), operator), 30)
            assert promoted.allow, promoted.reasons
            after = await client.request(request(nonce="shadow-request-after",
                                                 resource="files/report", issued_at=now()),
                                         ALICE, 30)
            assert after.allow  # promoted: enforced now, and no shadow outcome any more
            ids.append(after.verified.event_id)
            return ids

    decided = asyncio.run(flow())
    scraped = httpx.get(f"{service.api_url}/metrics", timeout=10).text
    assert ('govledger_shadow_decisions_total{agreement="disagree",policy_id="read-anything"} '
            '2.0') in scraped
    assert 'govledger_shadow_decisions_total{agreement="agree",policy_id="db-read"} 1.0' \
        in scraped
    wait_for_leaves(data, decided)
    done = report(data, "--json")
    assert done.returncode == 0, done.stderr
    (found,) = json.loads(done.stdout)["shadow_policies"]
    assert (found["digest"], found["agree"], found["disagree"]) == (digest, 1, 2)
    by_id = {p["policy_id"]: (p["agree"], p["disagree"]) for p in found["policies"]}
    assert by_id == {"read-anything": (1, 2), "db-read": (1, 0)}
    gate = report(data, "--fail-on-disagreement")
    assert gate.returncode == 1 and "read-anything" in gate.stdout, gate.stdout
    with LedgerStore(data / "ledger.db") as store:
        last = store.tree_size() - 1
    assert report(data, "--since", str(last), "--fail-on-disagreement").returncode == 0


def wait_for_leaves(data: Path, event_ids: list[str], timeout_s: float = 30) -> None:
    give_up = time.monotonic() + timeout_s
    with LedgerStore(data / "ledger.db") as store:
        while any(store.find(e) is None for e in event_ids):
            assert time.monotonic() < give_up, "the decisions never became leaves"
            time.sleep(0.1)
