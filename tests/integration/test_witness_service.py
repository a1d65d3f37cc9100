"""The log asks its witnesses after each checkpoint, off the append path, and serves the
checkpoint with their cosignatures; clients holding a witness policy (ProofClient,
``govledger ledger verify``) accept k of these keys and fail closed below. Real service
(embedded broker, SQLite), a real witness process, and a second witness that is down.
Inclusion bundles carry the grant: every read signs as agent:alice, a reader of its tenant
(docs/api.md "Authentication")."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.artifact import CheckedArtifact
from ledger.core.cosignature import WitnessPolicy, build_witness_vkey, verify_witnessed
from ledger.core.keys import Signer
from ledger.core.signers import SignerKeys
from ledger.errors import ProofError
from ledger.kafka.broker import free_port
from ledger.log.ledger_dir import read_vkey
from ledger.log.witness import add_log, init_witness
from ledger.sdk.client import ProofClient
from ledger.sdk.gate import http_log_check
from ledger.sdk.httpsig import SignedRequests
from ledger.sdk.sync_client import SyncClient
from tests.factories import ALICE, request
from tests.integration.test_witness_http import GOVLEDGER, WitnessProcess
from tests.service_support import Running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ORIGIN = "govledger.test/log"


def test_log_serves_witnessed_proofs_and_clients_fail_closed_below_quorum(
        tmp_path: Path) -> None:
    up = WitnessProcess(tmp_path / "w1", init_witness(tmp_path / "w1", "w1.test"), free_port())
    down = build_witness_vkey("w2.test", Signer.generate().public_key)  # nothing listens
    data = tmp_path / "data"

    def start_witness() -> None:
        add_log(up.directory, ORIGIN, read_vkey(data))
        up.start()
    running = Running(data, before_start=start_witness, witnesses=(
        f"{up.url} {up.vkey}", f"http://127.0.0.1:{free_port()} {down}"))
    try:
        service = running.service
        assert service.keyring is not None
        now = datetime.now(UTC).replace(microsecond=0)
        with SyncClient(running.settings, service.bootstrap, service.keyring) as client:
            grant = client.request(request(issued_at=now, nonce="witness-nonce-00001"), ALICE)
        assert grant.allow  # decided and sequenced with one witness down
        vkey = read_vkey(data)
        one = WitnessPolicy.of([up.vkey], 1)
        both = WitnessPolicy.of([up.vkey, down], 2)
        alice = SignedRequests(ALICE)
        proofs = ProofClient(service.api_url, vkey, witnesses=one,
                             signers=SignerKeys(keyring=service.keyring), auth=alice)

        async def fetch() -> dict[str, object]:
            for _ in range(150):  # until a checkpoint covering the grant is cosigned
                try:
                    return await proofs.inclusion(event_id=grant.artifact_id)
                except ProofError:
                    await asyncio.sleep(0.1)
            raise AssertionError("the grant was never under a witnessed checkpoint")
        bundle = asyncio.run(fetch())
        note = bundle["checkpoint"]
        assert isinstance(note, str)
        assert [c.witness.name for c in verify_witnessed(note, one)] == ["w1.test"]
        assert "w1.test" in asyncio.run(proofs.checkpoint())

        # The API answers cosigned=1 with w1's checkpoint: a client trusting only w2 refuses.
        only_down = WitnessPolicy.of([down], 1)
        with pytest.raises(ProofError, match="cosigned by 0 of the required 1"):
            asyncio.run(ProofClient(service.api_url, vkey, witnesses=only_down,
                                    auth=alice).inclusion(event_id=grant.artifact_id))
        strict = ProofClient(service.api_url, vkey, witnesses=both, auth=alice)
        with pytest.raises(ProofError, match="2 witness cosignature"):
            asyncio.run(strict.inclusion(event_id=grant.artifact_id))
        unwitnessed = httpx.get(f"{service.api_url}/v1/proofs/inclusion", auth=alice,
                                params={"event_id": grant.artifact_id, "cosigned": 1}).json()
        with pytest.raises(ProofError, match="cosigned by 1 of the required 2"):
            verify_witnessed(unwitnessed["checkpoint"], both)

        checked = CheckedArtifact(grant.artifact_id or "", grant.event,  # type: ignore[arg-type]
                                  grant.envelope)
        assert asyncio.run(http_log_check(service.api_url, vkey, witnesses=one,
                                          auth=alice)(checked))
        assert not asyncio.run(http_log_check(service.api_url, vkey, witnesses=both,
                                              auth=alice)(checked))
        assert not asyncio.run(http_log_check(service.api_url, vkey, witnesses=only_down,
                                              auth=alice)(checked))

        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(bundle))
        (tmp_path / "w2.vkey").write_text(down + "\n")
        base = [GOVLEDGER, "ledger", "verify", str(path), "--vkey", vkey, "--json"]
        ok = subprocess.run([*base, "--witness", str(up.directory / "witness.vkey")],
                            capture_output=True, text=True, timeout=60, check=False)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["witnesses"] == ["w1.test"]
        short = subprocess.run([*base, "--witness", up.vkey, "--witness",
                                str(tmp_path / "w2.vkey")],
                               capture_output=True, text=True, timeout=60, check=False)
        assert short.returncode == 1
        assert "cosigned by 1 of the required 2" in json.loads(short.stdout)["error"]
    finally:
        running.stop()
        up.stop()
