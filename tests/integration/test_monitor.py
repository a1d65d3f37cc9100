"""The governance monitor on the real embedded broker: each rule produces its alert, the
honest flow produces none, and a SIGKILLed monitor restarts without a duplicate alert and
without missing one inside its windows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from ledger.cli import app as cli
from ledger.core.alert_events import AlertRaised
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.datadir import DataDir
from ledger.errors import Reason
from ledger.kafka.offsets import probe_highwaters, topic_partitions
from ledger.keyfiles import load_signer
from ledger.log.reports import read_alerts
from ledger.log.store import LedgerStore
from ledger.sdk.client import Client
from ledger.sdk.gate import Gate
from ledger.server.children import settings_env
from processors.core.monitor_rules import (
    AFTER_REVOCATION,
    DENIAL_BURST,
    OUT_OF_SCOPE,
    OUTSIDE_WINDOW,
    SILENT,
    UNALLOWED,
)
from tests.factories import ALICE, ENV, request
from tests.monitor_scenarios import Scenario
from tests.service_support import AGENTS, RUNNER, Running, collect, produce

pytestmark = pytest.mark.integration

FAST = {"monitor_report_grace_s": 0.5, "monitor_silent_after_s": 3.0,
        "monitor_burst_threshold": 3, "monitor_tick_s": 0.2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MonitorProcess:
    """``python -m processors.monitor`` against a running stack, until killed or stopped."""

    def __init__(self, running: Running) -> None:
        self.data = running.settings.data_dir
        self.port = free_port()
        self.ready = self.data / f".test-monitor-ready-{time.monotonic_ns()}"
        env = {**os.environ, **settings_env(running.settings),
               "GOVLEDGER_KAFKA_BOOTSTRAP": running.service.bootstrap,
               "GOVLEDGER_MONITOR_METRICS_PORT": str(self.port)}
        self.log_path = self.data.parent / f"monitor-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "processors.monitor",
                                          "--ready-file", str(self.ready)], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"monitor not ready:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}}" if want else f"{name} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_metric(self, name: str, at_least: float, **labels: str) -> None:
        deadline = time.monotonic() + 60
        while self.metric(name, **labels) < at_least:
            assert time.monotonic() < deadline, f"{name} stayed below {at_least}"
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def scenario_for(running: Running) -> Scenario:
    data = DataDir(running.settings.data_dir)
    return Scenario(load_signer(data.authority_key), "govledger:authority", ALICE, RUNNER)


def publish(running: Running, s: Scenario) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=running.service.bootstrap, acks="all")
        await producer.start()
        try:
            for stream, envelope, event_id, event in s.published:
                key = event.lineage_root() or event_id
                await producer.send_and_wait(running.service.topics.name(stream), envelope,
                                             key=key.encode())
        finally:
            await producer.stop()
    asyncio.run(send())
    s.published.clear()


def logged_alerts(data: Path) -> list[AlertRaised]:
    with LedgerStore(data / "ledger.db") as store:
        return [alert for _, _, alert in read_alerts(store)]


def wait_alert(data: Path, rule: str, evidence: str, timeout_s: float = 60) -> AlertRaised:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for alert in logged_alerts(data):
            if alert.rule == rule and evidence in alert.evidence:
                return alert
        time.sleep(0.1)
    raise AssertionError(f"no {rule} alert naming {evidence[:16]}: {logged_alerts(data)}")


def settled_alerts(running: Running) -> list[AlertRaised]:
    """Every alert published so far, once the sequencer has logged the whole alerts topic."""
    settings, bootstrap = running.settings, running.service.bootstrap
    topic = running.service.topics.alerts

    async def marks() -> dict[tuple[str, int], int]:
        found = await probe_highwaters(settings, bootstrap,
                                       await topic_partitions(settings, bootstrap, [topic]))
        return {(tp.topic, tp.partition): mark for tp, mark in found.items()}
    wanted = asyncio.run(marks())
    deadline = time.monotonic() + 30
    while True:
        with LedgerStore(settings.data_dir / "ledger.db") as store:
            logged = store.offsets()
        if all(logged.get(tp, 0) >= mark for tp, mark in wanted.items()):
            return logged_alerts(settings.data_dir)
        assert time.monotonic() < deadline, "the sequencer did not log the alerts topic"
        time.sleep(0.05)


def topic_alert_ids(running: Running) -> list[str]:
    count = sum(1 for _ in settled_alerts(running))
    values = asyncio.run(collect(running.service.bootstrap, running.service.topics.alerts,
                                 count, timeout_s=10))
    ids = []
    for value in values:
        parsed = parse_envelope(value)
        event = parse_payload(parsed.payload_type, parsed.payload)
        assert isinstance(event, AlertRaised)
        ids.append(event.alert_id)
    return ids


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, MonitorProcess]]:
    """The sequencer and the monitor; the tests play the agents, runner and authority."""
    running = Running(tmp_path_factory.mktemp("monitor") / "data",
                      components=("sequencer", "api"), **FAST)
    monitor = MonitorProcess(running)
    try:
        yield running, monitor
    finally:
        monitor.stop()
        running.stop()


@pytest.mark.parametrize(("play", "rule"), [
    (Scenario.unallowed, UNALLOWED), (Scenario.after_revocation, AFTER_REVOCATION),
    (Scenario.outside_window, OUTSIDE_WINDOW), (Scenario.out_of_scope, OUT_OF_SCOPE),
    (Scenario.silent, SILENT)])
def test_each_execution_rule_raises_its_signed_alert_into_the_ledger(
        stack: tuple[Running, MonitorProcess], play, rule) -> None:  # type: ignore[no-untyped-def]
    running, monitor = stack
    s = scenario_for(running)
    evidence = play(s)
    publish(running, s)
    alert = wait_alert(running.settings.data_dir, rule, evidence)
    assert alert.signer == "govledger:authority"
    assert monitor.metric("govledger_monitor_alerts_total", rule=rule) >= 1


def test_a_burst_of_signature_denials_raises_one_alert_per_principal_and_tenant(
        stack: tuple[Running, MonitorProcess]) -> None:
    running, _ = stack
    s = scenario_for(running)
    last = s.burst(3, Reason.SIGNATURE_INVALID)
    publish(running, s)
    alert = wait_alert(running.settings.data_dir, DENIAL_BURST, last)
    assert alert.window is not None
    bursts = {a.subject: a for a in settled_alerts(running) if a.rule == DENIAL_BURST}
    assert set(bursts) == {"agent:alice", None}  # the principal's window and the tenant's
    assert bursts["agent:alice"].proposed_suspension == "agent:alice"
    assert bursts[None].proposed_suspension is None


def test_govledger_alerts_and_unused_grants_read_the_ledger(
        stack: tuple[Running, MonitorProcess]) -> None:
    running, _ = stack
    data = running.settings.data_dir
    s = scenario_for(running)
    evidence = s.unallowed()
    _, unused = s.granted(ttl=timedelta(seconds=1))
    publish(running, s)
    wait_alert(data, UNALLOWED, evidence)
    listed = CliRunner().invoke(cli, ["alerts", "--data", str(data), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert any(evidence in row["evidence"] and row["rule"] == UNALLOWED for row in rows)
    assert all(row["kind"] == "AlertRaised" for row in rows)
    scraped = urllib.request.urlopen(f"{running.service.api_url}/metrics").read().decode()
    assert 'govledger_alerts_total{rule="execution-without-allowance"}' in scraped
    deadline = time.monotonic() + 30
    while True:  # until the grant is logged and its one-second window has ended
        report = CliRunner().invoke(cli, ["unused-grants", "--data", str(data), "--json"])
        assert report.exit_code == 0, report.output
        if unused in report.output:
            break
        assert time.monotonic() < deadline, report.output
        time.sleep(0.2)
    assert evidence not in report.output


def test_govledger_alerts_follow_prints_an_alert_logged_after_it_started(
        stack: tuple[Running, MonitorProcess]) -> None:
    running, _ = stack
    data = running.settings.data_dir
    with subprocess.Popen([str(Path(sys.executable).parent / "govledger"), "alerts",
                           "--data", str(data), "--follow", "--json"],
                          stdout=subprocess.PIPE, text=True) as follow:
        try:
            s = scenario_for(running)
            evidence = s.unallowed()
            publish(running, s)
            assert follow.stdout is not None
            for line in follow.stdout:  # blocks until it prints; the test timeout bounds it
                if evidence in json.loads(line)["evidence"]:
                    break
        finally:
            follow.terminate()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies only")
def test_the_monitor_runs_only_on_idle_cpu(stack: tuple[Running, MonitorProcess]) -> None:
    """It never takes CPU from decisions (docs/monitor.md): SCHED_IDLE, every thread."""
    pid = stack[1].proc.pid
    threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    assert len(threads) > 1  # faust and aiokafka started theirs after the policy was set
    assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}


def test_forged_events_are_counted_and_ignored(stack: tuple[Running, MonitorProcess]) -> None:
    running, monitor = stack
    forged = Scenario(scenario_for(running).runner, "govledger:authority", ALICE, RUNNER)
    forged.unallowed()  # the "authority" key here is the runner's: unverifiable grants
    for index, item in enumerate(forged.published):
        if item[3].KIND == "ExecutionCompleted":  # and a report no key in the ring signed
            forged.published[index] = (item[0], item[1].replace(b'"sig":"', b'"sig":"AA'),
                                       *item[2:])
    before = monitor.metric("govledger_monitor_unverified_total", reason="IDENTITY_MISMATCH")
    publish(running, forged)
    monitor.wait_metric("govledger_monitor_unverified_total", before + 1,
                        reason="IDENTITY_MISMATCH")
    assert monitor.proc.poll() is None


def test_the_honest_flow_through_the_processor_and_gate_raises_no_alert(
        tmp_path: Path) -> None:
    running = Running(tmp_path / "data", components=("processor", "sequencer"), **FAST)
    monitor = MonitorProcess(running)
    try:
        async def honest() -> None:
            keyring = running.service.keyring
            assert keyring is not None
            async with Client(running.settings, running.service.bootstrap, keyring) as client:
                now = datetime.now(UTC)
                grant = await client.decision(await client.submit(
                    request(issued_at=now.replace(microsecond=0)), ALICE), timeout=30)
                assert grant.allow
                gate = Gate(client, RUNNER, AGENTS[2], keyring, measure=lambda: ENV,
                            timeout=30, allow_unlogged=True)  # no API in this stack
                async with gate.authorize(grant.envelope, "read", "db/orders/1"):
                    pass
        asyncio.run(honest())
        monitor.wait_metric("govledger_monitor_events_total", 1, kind="ExecutionCompleted")
        sentinel = scenario_for(running)
        evidence = sentinel.unallowed()  # judged no earlier than the honest report
        publish(running, sentinel)
        wait_alert(running.settings.data_dir, UNALLOWED, evidence)
        alerts = settled_alerts(running)
        assert [(a.rule, evidence in a.evidence) for a in alerts] == [(UNALLOWED, True)]
    finally:
        monitor.stop()
        running.stop()


def test_the_monitor_refuses_to_start_while_the_ledger_lacks_what_it_published(
        tmp_path: Path) -> None:
    """Fail closed: an alert on gov.alerts that the ledger does not hold (no sequencer) means
    a replay now could raise it again or miss state; the monitor exits 3 instead."""
    running = Running(tmp_path / "data", components=(), monitor_ledger_wait_s=1.0)
    try:
        asyncio.run(produce(running.service.bootstrap, running.service.topics.alerts,
                            [(b"k", b"an alert the ledger never logged")]))
        env = {**os.environ, **settings_env(running.settings),
               "GOVLEDGER_KAFKA_BOOTSTRAP": running.service.bootstrap}
        done = subprocess.run([sys.executable, "-m", "processors.monitor"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 3, done.stderr
        assert "has not caught up" in done.stderr
    finally:
        running.stop()


def test_a_sigkilled_monitor_restarts_without_duplicates_or_misses(tmp_path: Path) -> None:
    running = Running(tmp_path / "data", components=("sequencer",),
                      **{**FAST, "monitor_report_grace_s": 8.0})
    data = running.settings.data_dir
    monitor = MonitorProcess(running)
    try:
        s = scenario_for(running)
        first = s.unallowed()
        publish(running, s)
        wait_alert(data, UNALLOWED, first, timeout_s=90)
        pending = s.unallowed()  # noticed, then killed before its grace ends
        publish(running, s)
        monitor.wait_metric("govledger_monitor_events_total", 2, kind="ExecutionCompleted")
        monitor.kill()
        assert not [a for a in logged_alerts(data) if pending in a.evidence]

        monitor = MonitorProcess(running)
        later = s.unallowed()
        publish(running, s)
        wait_alert(data, UNALLOWED, pending, timeout_s=90)
        wait_alert(data, UNALLOWED, later, timeout_s=90)
        ids = [a.alert_id for a in settled_alerts(running)]
        assert len(ids) == len(set(ids)) == 3
        on_topic = topic_alert_ids(running)
        assert sorted(on_topic) == sorted(ids)  # not even re-published
    finally:
        monitor.stop()
        running.stop()
