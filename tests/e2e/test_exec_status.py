"""``govledger exec`` tells its own outcomes from the command's (issue 19, item 5): the
command's status passes through; refused 125, no verdict 124, not executable 126, not found
127. Real service (embedded broker), real subprocesses of the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.envelope import sign_event
from ledger.sdk.httpsig import SignedRequests
from tests.e2e.test_up import request_id
from tests.factories import ALICE, ENV, request
from tests.service_support import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
GOVLEDGER = str(Path(sys.executable).with_name("govledger"))


def govledger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOVLEDGER_KAFKA_IDEMPOTENT": "false"}
    return subprocess.run([GOVLEDGER, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_exec_exit_status_separates_the_gate_from_the_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    running = Running(data, before_start=lambda: govledger(
        "keys", "generate", "runner", "--dir", "keys", "--identity", "runner:ci",
        "--tenant", "acme", "--role", "executor", "--keyring", str(data / "keyring.json"),
        cwd=tmp_path))
    service = running.service
    try:
        grant = sign_event(request(issued_at=datetime.now(UTC).replace(microsecond=0),
                                   nonce="exec-status-nonce-1"), ALICE)
        with httpx.Client(auth=SignedRequests(ALICE), base_url=service.api_url, timeout=30) as http:
            assert http.post("/v1/events", content=grant).status_code == 202
            decided = http.get(f"/v1/decisions/{request_id(grant)}", params={"wait": 20})
        assert decided.json()["allow"] is True, decided.text
        (tmp_path / "grant.json").write_text(decided.json()["envelope"])

        def exec_(action: str, *command: str, kafka: str = service.bootstrap) -> int:
            done = govledger("exec", "--artifact", "grant.json", "--action", action,
                             "--resource", "db/orders/1", "--key", "keys/runner.key",
                             "--environment", ENV, "--data", str(data), "--kafka", kafka,
                             "--api", service.api_url, "--timeout", "10", "--", *command,
                             cwd=tmp_path)
            return done.returncode

        assert exec_("read", "sh", "-c", "exit 3") == 3  # the command's own, passed through
        assert exec_("read", "sh", "-c", "kill -TERM $$") == 128 + 15
        assert exec_("read", str(tmp_path / "no-such-command")) == 127
        (tmp_path / "not-executable").write_text("#!/bin/sh\n")
        assert exec_("read", str(tmp_path / "not-executable")) == 126
        assert exec_("write", "sh", "-c", "exit 0") == 125  # refused: out of scope
        # no verdict: the broker cannot be reached (an unreachable API is a refusal instead:
        # the artifact cannot be shown to be logged, ARTIFACT_NOT_LOGGED)
        assert exec_("read", "sh", "-c", "exit 0", kafka="127.0.0.1:9") == 124
        assert exec_("read", "true") == 0
    finally:
        running.stop()
    assert json.loads((tmp_path / "grant.json").read_text())["payloadType"]
