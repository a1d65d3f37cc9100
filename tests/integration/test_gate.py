"""The executor gate on the running stack: offline checks, verdicts, and the log check
(on by default)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.core.envelope import sign_event
from ledger.core.events import AuthorizationGranted
from ledger.errors import ConfigError, Reason
from ledger.keyfiles import load_signer
from ledger.log.ledger_dir import read_vkey
from ledger.sdk.client import Client
from ledger.sdk.gate import ExecutionRefusedError, Gate, http_log_check
from ledger.sdk.httpsig import SignedRequests
from ledger.server.service import Service
from tests.factories import ALICE, ENV, default_ring, request
from tests.service_support import RUNNER, make_data_dir

pytestmark = pytest.mark.integration


async def scenario(data: Path) -> None:
    make_data_dir(data)
    settings = Settings(data_dir=data, api_port=0, checkpoint_interval_s=0.1)
    service = Service(settings)
    await service.start()
    try:
        assert service.keyring is not None
        runner = service.keyring.get(RUNNER.key_id)
        async with Client(settings, service.bootstrap, service.keyring) as client:
            now = datetime.now(UTC).replace(microsecond=0)
            rid = await client.submit(request(issued_at=now, nonce="gate-nonce-00000001",
                                              single_use=True), ALICE)
            grant = await client.decision(rid, timeout=20)
            assert grant.allow
            logged = http_log_check(service.api_url, read_vkey(data),
                                    auth=SignedRequests(RUNNER))
            gate = Gate(client, RUNNER, runner, service.keyring, measure=lambda: ENV,
                        require_logged=logged)
            ran = []
            async with gate.authorize(grant.envelope, "read", "db/orders/7"):
                ran.append(1)
            assert ran == [1]
            # single use: the processor refuses the second execution
            with pytest.raises(ExecutionRefusedError) as info:
                async with gate.authorize(grant.envelope, "read", "db/orders/7"):
                    ran.append(2)
            assert info.value.reason is Reason.ARTIFACT_CONSUMED
            # offline refusals never reach the processor
            wrong_env = Gate(client, RUNNER, runner, service.keyring,
                             measure=lambda: "sha256:" + "0" * 64, require_logged=logged)
            with pytest.raises(ExecutionRefusedError) as info:
                async with wrong_env.authorize(grant.envelope, "read", "db/orders/7"):
                    ran.append(3)
            assert info.value.reason is Reason.ENV_MISMATCH
            # A grant minted with the authority key but never decided nor logged (a stolen
            # key): the offline check passes, the log check refuses.
            authority = load_signer(data / "keys" / "authority.key")
            assert isinstance(grant.event, AuthorizationGranted)
            forged = grant.event.model_copy(update={"nonce": "forged-nonce-000001",
                                                    "issued_at": now + timedelta(seconds=1)})
            impatient = Gate(client, RUNNER, runner, service.keyring, measure=lambda: ENV,
                             timeout=1.0, require_logged=logged)
            with pytest.raises(ExecutionRefusedError) as info:
                async with impatient.authorize(sign_event(forged, authority), "read",
                                               "db/orders/7"):
                    ran.append(4)
            assert info.value.reason is Reason.ARTIFACT_NOT_LOGGED
            assert ran == [1]
    finally:
        await service.stop()


def test_gate_allows_once_refuses_offline_and_requires_logged_artifacts(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path / "data"))


def test_a_gate_without_the_log_check_must_be_asked_for(tmp_path: Path) -> None:
    """Fail closed by default: no log check configured is a configuration error, unless
    ``allow_unlogged`` asks for the weaker gate explicitly."""
    keyring = default_ring()
    runner = keyring.get(ALICE.key_id)
    client = Client(Settings(data_dir=tmp_path), "127.0.0.1:1", keyring)
    with pytest.raises(ConfigError, match="allow_unlogged"):
        Gate(client, ALICE, runner, keyring, measure=lambda: ENV)
    weaker = Gate(client, ALICE, runner, keyring, measure=lambda: ENV, allow_unlogged=True)
    assert weaker.require_logged is None


def test_govledger_exec_needs_the_api_or_an_explicit_opt_out(tmp_path: Path) -> None:
    """``govledger exec`` proves the artifact is logged unless told not to: without --api it
    refuses to start (exit 2) and runs nothing."""
    marker = tmp_path / "ran"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("govledger")), "exec", "--artifact", "grant.json",
         "--action", "read", "--resource", "db/orders/1", "--key", "runner.key",
         "--environment", ENV, "--data", str(tmp_path), "--kafka", "127.0.0.1:1", "--",
         "touch", str(marker)],
        capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if k != "GOVLEDGER_API"})
    assert done.returncode == 2, done.stderr
    assert "--allow-unlogged" in done.stderr and not marker.exists()
