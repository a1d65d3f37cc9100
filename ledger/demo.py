"""``govledger demo``: the whole product in under a minute, on this machine, with nothing running.

It starts the embedded stack (broker, processor, sequencer, API) in a temporary data
directory, registers a few agents with their own keys, and plays a scenario: a root grant, a
delegation chain two levels deep with narrowing scopes, five kinds of denial, executions
through the gate, a revocation in the middle of the chain after which everything below it is
refused, governance applied live (a key registered, a policy published, the kill switch), a
large transfer that waits for two human approvals (ledger/demo_scenes.py), an execution
reported without an allowance (which the governance monitor raises a signed alert about),
and finally lineage evidence bundles exported and verified offline.
Every step has an expected outcome; the demo exits 0 only if every one happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ledger import demo_scenes as scenes
from ledger.config import Settings
from ledger.core.bundles import verify_bundle
from ledger.core.events import (
    AuthorizationRequested,
    AuthorizationRevoked,
    Event,
    LineageRef,
    Scope,
    Window,
)
from ledger.core.execution_events import ExecutionCompleted
from ledger.core.keys import Principal, Signer, principal_document
from ledger.datadir import DataDir, init_data_dir
from ledger.errors import GovLedgerError
from ledger.keyfiles import load_signer_keys
from ledger.log.ledger_dir import read_vkey
from ledger.log.proofs import prove_lineage
from ledger.log.reports import read_alerts
from ledger.log.store import LedgerStore
from ledger.sdk.client import Client, Decision
from ledger.sdk.gate import ExecutionRefusedError, Gate, http_log_check
from ledger.sdk.httpsig import SignedRequests
from ledger.server.service import Service

RUNTIME = "sha256:" + hashlib.sha256(b"govledger demo runtime image v1").hexdigest()
OTHER_RUNTIME = "sha256:" + hashlib.sha256(b"an unapproved runtime image").hexdigest()


@dataclass(slots=True)
class Step:
    name: str
    expected: str
    outcome: str = "?"
    reason: str = ""
    event_id: str = ""
    ledger_index: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == self.expected.split(" ")[0] and (
            " " not in self.expected or self.reason == self.expected.split(" ", 1)[1])


@dataclass(slots=True)
class Agent:
    identity: str
    roles: frozenset[str]
    signer: Signer = field(default_factory=Signer.generate)

    @property
    def principal(self) -> Principal:
        return Principal(self.identity, "acme", self.signer.public_key, self.roles)


AGENTS = {
    "planner": Agent("agent:planner", frozenset({"requester", "reader", "orders-writer"})),
    "analyst": Agent("agent:analyst", frozenset({"requester", "reader", "orders-writer"})),
    "reporter": Agent("agent:reporter", frozenset({"requester", "reader"})),
    "security": Agent("ops:security", frozenset({"revoker"})),
    # Not in keyring.json: registered live by a governance event during the demo.
    "newcomer": Agent("agent:newcomer", frozenset({"requester", "reader"})),
    # Human approval: the payer's large transfers wait for two of the approvers.
    "payer": Agent("agent:payer", frozenset({"requester", "reader", "payments",
                                             "payments-large"})),
    "ann": Agent("human:ann", frozenset({"payments-approver"})),
    "ben": Agent("human:ben", frozenset({"payments-approver"})),
}
LIVE_ONLY = ("newcomer",)

class Demo:
    def __init__(self, data: Path, console: Console) -> None:
        self.data = data
        self.console = console
        self.steps: list[Step] = []
        self.nonce = 0
        self.service: Service | None = None
        self.client: Client | None = None
        self.alert_event_id: str | None = None
        self.agents = AGENTS

    # -- plumbing ----------------------------------------------------------------------------

    def prepare(self) -> Settings:
        init_data_dir(self.data, "govledger.demo/log")
        keyring = DataDir(self.data).keyring
        doc = json.loads(keyring.read_text())
        doc["principals"] += [dict(principal_document(a.principal))
                              for name, a in AGENTS.items() if name not in LIVE_ONLY]
        keyring.write_text(json.dumps(doc, indent=2) + "\n")
        return Settings(data_dir=self.data, api_port=0, checkpoint_interval_s=0.2,
                        log_origin="govledger.demo/log", monitor_report_grace_s=1.0,
                        monitor_tick_s=0.25)

    def next_nonce(self) -> str:
        self.nonce += 1
        return f"demo-{int(time.time())}-{self.nonce:06d}"

    def request(self, who: str, actions: tuple[str, ...], resource: str, *,
                ttl: timedelta = timedelta(minutes=30), parent: Decision | None = None,
                root: str | None = None, holder: str | None = None,
                environments: tuple[str, ...] = (RUNTIME,), nonce: str | None = None,
                issued_at: datetime | None = None) -> AuthorizationRequested:
        now = issued_at or datetime.now(UTC).replace(microsecond=0)
        return AuthorizationRequested(
            signer=AGENTS[who].identity, tenant="acme", nonce=nonce or self.next_nonce(),
            issued_at=now, holder=holder, scope=Scope(actions=tuple(sorted(actions)),
                                                     resource=resource),
            environments=tuple(sorted(environments)),
            window=Window(not_before=now, not_after=now + ttl),
            lineage=LineageRef(root=root, parent=parent.artifact_id if parent else None))

    async def ask(self, name: str, expected: str, who: str,
                  event: AuthorizationRequested) -> Decision:
        assert self.client is not None
        request_id = await self.client.submit(event, AGENTS[who].signer)
        decision = await self.client.decision(request_id, timeout=20)
        self.record(name, expected, decision)
        return decision

    def record(self, name: str, expected: str, decision: Decision | None,
               outcome: str | None = None, reason: str = "") -> Step:
        step = Step(name, expected)
        if decision is not None:
            step.outcome = "ALLOWED" if decision.allow else "DENIED"
            step.reason = decision.reasons[0] if decision.reasons else ""
            step.event_id = decision.verified.event_id
        if outcome is not None:
            step.outcome, step.reason = outcome, reason
        self.steps.append(step)
        mark = "[green]✓[/green]" if step.ok else "[red]✗[/red]"
        self.console.print(f"{mark} {name}: {step.outcome} {step.reason}".rstrip())
        return step

    def gate(self, who: str) -> Gate:
        assert self.client is not None
        assert self.service is not None
        keyring = self.service.keyring
        assert keyring is not None
        agent = AGENTS[who]
        return Gate(self.client, agent.signer, agent.principal, keyring,
                    measure=lambda: RUNTIME, timeout=20,
                    require_logged=http_log_check(self.service.api_url, read_vkey(self.data),
                                                  auth=SignedRequests(agent.signer)))

    async def execute(self, name: str, expected: str, who: str, artifact: Decision,
                      action: str, resource: str) -> None:
        gate = self.gate(who)
        try:
            async with gate.authorize(artifact.envelope, action, resource):
                pass  # the guarded work: here, nothing to do
        except ExecutionRefusedError as exc:
            step = self.record(name, expected, gate.last_verdict, "REFUSED", exc.reason.value)
        else:
            step = self.record(name, expected, gate.last_verdict, "ALLOWED")
        if gate.last_verdict is not None:
            step.event_id = gate.last_verdict.verified.event_id

    # -- the scenario ------------------------------------------------------------------------

    async def scenario(self) -> tuple[str, str | None]:
        """Play every step; return the event ids whose lineage bundles are exported (the
        delegation chain's execution, the approved transfer's)."""
        assert self.client is not None
        root = await self.ask("root grant: planner reads/writes db/orders/*", "ALLOWED",
                              "planner", self.request("planner", ("read", "write"),
                                                      "db/orders/*"))
        r = root.subject_id
        mid = await self.ask("delegation 1: planner -> analyst, db/orders/eu/*", "ALLOWED",
                             "planner", self.request("planner", ("read", "write"),
                                                     "db/orders/eu/*", parent=root, root=r,
                                                     holder="agent:analyst",
                                                     ttl=timedelta(minutes=20)))
        leaf = await self.ask("delegation 2: analyst -> reporter, read db/orders/eu/2026/*",
                              "ALLOWED", "analyst",
                              self.request("analyst", ("read",), "db/orders/eu/2026/*",
                                           parent=mid, root=r, holder="agent:reporter",
                                           ttl=timedelta(minutes=10)))
        await self.ask("policy forbid: planner reads prod/secrets/*", "DENIED POLICY_DENY",
                       "planner", self.request("planner", ("read",), "prod/secrets/*"))
        first = self.request("planner", ("read",), "db/orders/us/*")
        await self.ask("fresh request", "ALLOWED", "planner", first)
        await self.ask("replayed nonce on a different request", "DENIED REPLAY", "planner",
                       self.request("planner", ("read",), "db/orders/ca/*", nonce=first.nonce))
        await self.ask("widening child: analyst adds delete", "DENIED SCOPE_WIDENING",
                       "analyst", self.request("analyst", ("delete", "read"),
                                               "db/orders/eu/*", parent=mid, root=r))
        await self.ask("environment mismatch: child adds an unapproved runtime",
                       "DENIED ENV_MISMATCH", "analyst",
                       self.request("analyst", ("read",), "db/orders/eu/*", parent=mid, root=r,
                                    environments=(RUNTIME, OTHER_RUNTIME)))
        await self.ask("expired request: issued 10 minutes ago", "DENIED EXPIRED", "planner",
                       self.request("planner", ("read",), "db/orders/*",
                                    issued_at=datetime.now(UTC).replace(microsecond=0)
                                    - timedelta(minutes=10)))
        await self.execute("gate: reporter reads db/orders/eu/2026/q3", "ALLOWED", "reporter",
                           leaf, "read", "db/orders/eu/2026/q3")
        await self.execute("gate: analyst writes db/orders/eu/7", "ALLOWED", "analyst", mid,
                           "write", "db/orders/eu/7")
        evidence = self.steps[-2].event_id
        revocation = AuthorizationRevoked(
            signer=AGENTS["planner"].identity, tenant="acme", nonce=self.next_nonce(),
            issued_at=datetime.now(UTC).replace(microsecond=0),
            artifact_id=mid.artifact_id or "", root=r, reason="analyst compromised")
        revocation_id = await self.client.revoke(revocation, AGENTS["planner"].signer)
        applied = await self.client.decision(revocation_id, timeout=20)
        self.record(f"revoke the middle of the chain ({len(applied.event.revoked)} artifacts)",  # type: ignore[attr-defined]
                    "ALLOWED", applied)
        await self.execute("gate after revocation: reporter reads db/orders/eu/2026/q3",
                           "REFUSED ARTIFACT_REVOKED", "reporter", leaf, "read",
                           "db/orders/eu/2026/q3")
        await self.execute("gate after revocation: analyst writes db/orders/eu/7",
                           "REFUSED ARTIFACT_REVOKED", "analyst", mid, "write", "db/orders/eu/7")
        await self.ask("new delegation under the revoked artifact", "DENIED PARENT_REVOKED",
                       "analyst", self.request("analyst", ("read",), "db/orders/eu/x/*",
                                               parent=mid, root=r))
        await self.execute("gate: planner's root artifact still works", "ALLOWED", "planner",
                           root, "read", "db/orders/us/1")
        await scenes.governance(self, root)
        approved = await scenes.approvals(self)
        await self.rogue_report(root)
        return evidence, approved

    async def rogue_report(self, root: Decision) -> None:
        """An executor reports an execution that never went through the gate: the
        processor has nothing to decide, the ledger records it, the monitor alerts."""
        assert self.client is not None
        never_asked = hashlib.sha256(b"an execution nobody allowed").hexdigest()
        report = ExecutionCompleted(
            signer=AGENTS["reporter"].identity, tenant="acme", nonce=self.next_nonce(),
            issued_at=datetime.now(UTC).replace(microsecond=0),
            artifact_id=root.artifact_id or "", root=root.subject_id,
            execution_id=never_asked)
        report_id = await self.client.send("executions", report, AGENTS["reporter"].signer)
        step = self.record("monitor: an execution reported without an allowance",
                           "ALERT execution-without-allowance", None, *await self.alert_on(
                               report_id))
        step.event_id = self.alert_event_id or report_id

    async def alert_on(self, evidence: str, timeout_s: float = 60) -> tuple[str, str]:
        """The monitor's alert naming ``evidence``, once the ledger has it (the monitor
        joins its group and rebuilds from the ledger while the scenario runs)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with LedgerStore(self.data / "ledger.db") as store:
                for _, event_id, alert in read_alerts(store):
                    if evidence in alert.evidence:
                        self.alert_event_id = event_id
                        return "ALERT", alert.rule
            await asyncio.sleep(0.2)
        return "NO ALERT", ""

    async def locate(self, timeout_s: float = 20) -> None:
        """Find every step's decision in the ledger (waits for the sequencer)."""
        deadline = time.monotonic() + timeout_s
        with LedgerStore(self.data / "ledger.db") as store:
            for step in self.steps:
                while step.event_id and step.ledger_index is None:
                    found = store.find(step.event_id)
                    if found is not None:
                        step.ledger_index = found.index
                    elif time.monotonic() > deadline:
                        break
                    else:
                        await asyncio.sleep(0.1)

    async def evidence(self, event_id: str, name: str = "evidence.json") -> Step:
        bundle = prove_lineage(self.data, event_id)
        result = verify_bundle(json.loads(json.dumps(bundle)), read_vkey(self.data),
                               load_signer_keys(keyring=DataDir(self.data).keyring))
        approvals = bundle.get("approvals", [])
        with_them = (f" with {len(approvals)} approval events"
                     if isinstance(approvals, list) and approvals else "")
        step = self.record(f"{name}: {len(result.event_ids)} hops{with_them} verified "
                           "offline", "VERIFIED", None, "VERIFIED")
        step.event_id = event_id
        (self.data / name).write_text(json.dumps(bundle, indent=2) + "\n")
        return step

    def table(self) -> Table:
        table = Table(title="govledger demo")
        for column in ("#", "event", "outcome", "reason", "ledger index", "ok"):
            table.add_column(column)
        for n, step in enumerate(self.steps, 1):
            table.add_row(str(n), step.name, step.outcome, step.reason,
                          "" if step.ledger_index is None else str(step.ledger_index),
                          "[green]yes[/green]" if step.ok else "[red]NO[/red]")
        return table

    async def run(self) -> bool:
        settings = self.prepare()
        self.console.print(f"[bold]starting the embedded stack[/bold] in {self.data}")
        self.service = Service(settings)
        await self.service.start()
        try:
            self.console.print(f"broker {self.service.bootstrap}, API {self.service.api_url}")
            assert self.service.keyring is not None
            async with Client(settings, self.service.bootstrap,
                              self.service.keyring) as client:
                self.client = client
                evidence, approved = await self.scenario()
            await self.locate()
            for event_id, name in ((evidence, "evidence.json"),
                                   (approved, "evidence-approved.json")):
                if event_id:
                    await self.wait_checkpointed(event_id)
                    await self.evidence(event_id, name)
        finally:
            await self.service.stop()
        self.console.print(self.table())
        return all(step.ok for step in self.steps)

    async def wait_checkpointed(self, event_id: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with LedgerStore(self.data / "ledger.db") as store:
                found, latest = store.find(event_id), store.latest_checkpoint()
                if found is not None and latest is not None and latest[0] > found.index:
                    return
            await asyncio.sleep(0.1)


def run_demo(data: Path | None, console: Console | None = None) -> bool:
    """Run the demo in ``data`` (a fresh temporary directory when None). True = all as
    expected."""
    console = console or Console()
    started = time.monotonic()
    try:
        if data is not None:
            ok = asyncio.run(Demo(data, console).run())
        else:
            with tempfile.TemporaryDirectory(prefix="govledger-demo-") as tmp:
                ok = asyncio.run(Demo(Path(tmp) / "data", console).run())
    except GovLedgerError as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        return False
    console.print(f"{'all outcomes as expected' if ok else 'UNEXPECTED OUTCOMES'} in "
                  f"{time.monotonic() - started:.1f}s")
    return ok


__all__ = ["Event", "run_demo"]
