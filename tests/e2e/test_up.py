"""``govledger up`` end to end: SDK and HTTP API, SIGKILL mid-load, restart, then every
request has exactly one decision, every event one leaf, audit passes, checkpoints consistent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.config import Settings
from ledger.core.bundles import verify_bundle
from ledger.core.envelope import event_id, sign_event
from ledger.keyfiles import load_keyring
from ledger.sdk.client import Client
from ledger.sdk.httpsig import SignedRequests
from tests.factories import ALICE, request
from tests.service_support import ServiceProcess, make_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
GOVLEDGER = str(Path(sys.executable).parent / "govledger")


def requests_batch(n: int) -> list[bytes]:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return [sign_event(request(nonce=f"e2e-nonce-{k:08d}", issued_at=now,
                               resource="db/orders/*" if k % 5 else "prod/secrets/*"), ALICE)
            for k in range(n)]


def request_id(envelope: bytes) -> str:
    return event_id(base64.b64decode(json.loads(envelope)["payload"]))


def post_all(api: str, envelopes: list[bytes]) -> int:
    ok = 0
    with httpx.Client(auth=SignedRequests(ALICE), base_url=api, timeout=10) as http:
        for env in envelopes:
            try:
                response = http.post("/v1/events", content=env,
                                     headers={"content-type": "application/json"})
            except httpx.HTTPError:
                break  # the service was killed under us
            assert response.status_code == 202, response.text
            ok += 1
    return ok


def decisions_of(api: str, ids: list[str], wait: float = 15) -> dict[str, str]:
    found = {}
    with httpx.Client(auth=SignedRequests(ALICE), base_url=api, timeout=wait + 10) as http:
        for rid in ids:
            response = http.get(f"/v1/decisions/{rid}", params={"wait": wait})
            if response.status_code == 200:
                found[rid] = response.json()["envelope"]
    return found


def test_up_survives_sigkill_with_no_changed_decision(tmp_path: Path) -> None:
    kill_restart_and_check(tmp_path, 120)


@pytest.mark.slow
def test_up_survives_sigkill_under_heavier_load(tmp_path: Path) -> None:
    """The fault-injection run behind -m slow: ten times the requests in flight."""
    kill_restart_and_check(tmp_path, 1200)


def kill_restart_and_check(tmp_path: Path, n: int) -> None:
    data = tmp_path / "data"
    make_data_dir(data)
    envelopes = requests_batch(n)
    ids = [request_id(e) for e in envelopes]

    first = ServiceProcess(data)
    try:
        # The SDK path: a few requests through the Python client on Kafka.
        kafka = first._wait_for("kafka")
        sdk_ids = asyncio.run(sdk_round_trip(data, kafka, envelopes[:5]))
        assert sdk_ids == ids[:5]
        posted = post_all(first.api, envelopes[:n // 2])
        before = decisions_of(first.api, ids[:posted])
        assert len(before) == posted
        with httpx.Client(auth=SignedRequests(ALICE), base_url=first.api) as http:
            old_checkpoint = wait_checkpoint(http, min_size=1)
        # Load in flight, then SIGKILL.
        loader = subprocess.Popen([sys.executable, "-c", LOADER, first.api, str(n)])
        time.sleep(0.5)
        first.kill()
        loader.wait(timeout=30)
    finally:
        if first.proc.poll() is None:
            first.kill()

    second = ServiceProcess(data)
    try:
        assert post_all(second.api, envelopes) == len(envelopes)  # resubmit everything
        after = decisions_of(second.api, ids)
        assert set(after) == set(ids), "every request has a decision"
        for rid, envelope in before.items():
            assert after[rid] == envelope, "a decision changed across the restart"
        with httpx.Client(auth=SignedRequests(ALICE), base_url=second.api) as http:
            expected = 1 + 2 * len(ids)  # policy + requests + decisions
            new_checkpoint = wait_checkpoint(http, min_size=expected)
            bundle = http.get("/v1/proofs/consistency",
                              params={"old_size": old_checkpoint,
                                      "new_size": new_checkpoint}).json()
            vkey = http.get("/v1/vkey").text.strip()
        verify_bundle(bundle, vkey)
    finally:
        assert second.terminate() == 0, second.output()

    with sqlite3.connect(data / "ledger.db") as db:
        for rid in ids:
            rows = db.execute("SELECT kind FROM leaves WHERE parent_ref = ? AND kind IN "
                              "('AuthorizationGranted', 'AuthorizationDenied')",
                              (bytes.fromhex(rid),)).fetchall()
            assert len(rows) == 1, (rid, rows)
            assert db.execute("SELECT count(*) FROM leaves WHERE event_id = ?",
                              (bytes.fromhex(rid),)).fetchone()[0] == 1
    audit = subprocess.run([GOVLEDGER, "ledger", "audit", "--data", str(data), "--json"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["ok"] is True


async def sdk_round_trip(data: Path, kafka: str, envelopes: list[bytes]) -> list[str]:
    settings = Settings(data_dir=data, kafka_bootstrap=kafka, kafka_idempotent=False)
    ids = []
    async with Client(settings, kafka, load_keyring(data / "keyring.json")) as client:
        for env in envelopes:
            rid = request_id(env)
            await client.send_raw("requests", env, rid)
            decision = await client.decision(rid, timeout=20)
            assert decision.subject_id == rid
            ids.append(rid)
    return ids


def wait_checkpoint(http: httpx.Client, min_size: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    size = 0
    while time.monotonic() < deadline:
        size = int(http.get("/v1/checkpoint").text.splitlines()[1])
        if size >= min_size:
            return size
        time.sleep(0.2)
    raise AssertionError(f"checkpoint stuck at {size} < {min_size}")


LOADER = r"""
import sys, httpx, json
sys.path.insert(0, ".")
from tests.e2e.test_up import requests_batch
api, n = sys.argv[1], int(sys.argv[2])
with httpx.Client(base_url=api, timeout=5) as http:
    for env in requests_batch(n)[n // 2:]:
        try:
            http.post("/v1/events", content=env, headers={"content-type": "application/json"})
        except httpx.HTTPError:
            break
"""


def children_of(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` (every thread's), each with its command line."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            found[int(child)] = cmdline.decode(errors="replace")
    return found


def the_child(up: ServiceProcess, marker: str) -> int:
    matches = [pid for pid, cmd in children_of(up.proc.pid).items() if marker in cmd]
    assert len(matches) == 1, children_of(up.proc.pid)
    return matches[0]


@pytest.mark.parametrize(("marker", "named"), [
    ("tansu", "broker failed: the embedded broker"),
    ("-m processors --ready-file", "processor failed: the processor process"),
    ("-m processors.monitor", "monitor failed: the monitor process"),
    ("-m ledger.server.sequencer_process", "sequencer failed: the sequencer process"),
])
def test_up_exits_3_naming_the_component_when_its_process_is_killed(
        tmp_path: Path, marker: str, named: str) -> None:
    """Fail fast: a supervisor restarts the whole service; nothing keeps running useless."""
    data = tmp_path / "data"
    make_data_dir(data)
    up = ServiceProcess(data)
    try:
        os.kill(the_child(up, marker), signal.SIGKILL)
        killed = time.monotonic()
        assert up.proc.wait(timeout=30) == 3, up.output()
        assert time.monotonic() - killed < 15
    finally:
        if up.proc.poll() is None:
            up.kill()
        up.log.close()
    failures = [line for line in up.output().splitlines() if "stopping the service" in line]
    assert len(failures) == 1, up.output()
    assert named in failures[0]
    assert "exited with status -9" in failures[0]


def test_ctrl_c_stops_up_and_every_child_in_order_with_exit_0(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground group: `up` stops with 0, no child
    is left and none is reported failed. The Python children run in sessions of their own,
    so only `up` gets the signal and stops them in order."""
    data = tmp_path / "data"
    make_data_dir(data)
    up = ServiceProcess(data, new_session=True)
    try:
        children = children_of(up.proc.pid)
        assert len(children) == 4, children  # broker, sequencer, processor, monitor
        python = [pid for pid in children
                  if b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(python) == 3, children
        assert all(os.getsid(pid) == pid != os.getsid(up.proc.pid) for pid in python)
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(timeout=60) == 0, up.output()
    finally:
        if up.proc.poll() is None:
            up.kill()
        up.log.close()
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    assert "stopping the service" not in up.output()
