"""The demo's scenes that change who may do what while it runs (``govledger demo``,
ledger/demo.py): governance applied live (a key registered, a policy published, the tenant's
kill switch) and human approval (a large transfer that waits for two approvers, one refused).

Each scene records its steps on the :class:`~ledger.demo.Demo` with the outcome it expects.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import event_id as envelope_event_id
from ledger.core.envelope import parse_envelope
from ledger.core.events import AuthorizationGranted
from ledger.datadir import DataDir
from ledger.keyfiles import load_signer
from ledger.log.governance import OPERATOR_IDENTITY
from ledger.sdk.approvals import Approver
from ledger.sdk.client import Decision
from ledger.sdk.governance import Admin
from ledger.server.governance_tools import policy_payload

if TYPE_CHECKING:
    from ledger.demo import Demo

REPORTS_POLICY = ('@id("read-reports")\npermit (principal, action == Action::"read", '
                  'resource in Resource::"reports/*")\n'
                  'when { principal.roles.contains("reader") };\n')
LARGE = {"amount": 50_000, "currency": "EUR"}  # over the example policy's 10,000 limit


async def governance(demo: Demo, root: Decision) -> None:
    """Governance applied live (docs/governance.md): a key registered, a policy published,
    the kill switch for the tenant, each a signed event of the operator."""
    admin = Admin(OPERATOR_IDENTITY, "*", load_signer(DataDir(demo.data).operator_key))
    newcomer = demo.agents["newcomer"]
    await govern(demo, "register agent:newcomer's key, live", admin.register(
        newcomer.identity, newcomer.signer.public_key, tuple(newcomer.roles),
        tenant="acme", reason="demo: a new agent joins"))
    await demo.ask("newcomer reads db/orders/* under its new key", "ALLOWED", "newcomer",
                   demo.request("newcomer", ("read",), "db/orders/*"))
    await demo.ask("planner reads reports/q4 (no policy permits it yet)", "DENIED POLICY_DENY",
                   "planner", demo.request("planner", ("read",), "reports/q4"))
    with tempfile.TemporaryDirectory() as scratch:
        policies = Path(scratch) / "policies"
        shutil.copytree(DataDir(demo.data).policies, policies)
        (policies / "reports.cedar").write_text(REPORTS_POLICY)
        files, digest = policy_payload(policies)
    await govern(demo, "publish policy v2 (reports readable), live",
                 admin.publish_policy(files, digest, "v2", reason="demo"))
    await demo.ask("planner reads reports/q4 under policy v2", "ALLOWED", "planner",
                   demo.request("planner", ("read",), "reports/q4"))
    await govern(demo, "suspend tenant acme (the kill switch)",
                 admin.suspend_tenant("acme", reason="demo: incident drill"))
    await demo.execute("gate after the suspension: planner's root artifact",
                       "REFUSED TENANT_SUSPENDED", "planner", root, "read", "db/orders/us/2")
    await govern(demo, "resume tenant acme", admin.resume_tenant("acme"))


async def govern(demo: Demo, name: str, envelope: bytes) -> None:
    """Send a governance event and wait until it is in force, the ledger's follower
    included (the sequencer admits the next events under it)."""
    assert demo.client is not None
    assert demo.service is not None
    event_id = envelope_event_id(parse_envelope(envelope).payload)
    await demo.client.send_raw("governance", envelope, "governance")
    decision = await demo.client.decision(event_id, timeout=20)
    position = getattr(decision.event, "position", None)
    follower = demo.service.governance
    deadline = time.monotonic() + 20
    while (follower is not None and isinstance(position, int)
           and follower.state.position < position and time.monotonic() < deadline):
        await asyncio.sleep(0.05)
    demo.record(name, "ALLOWED", decision)


async def approvals(demo: Demo) -> str | None:
    """Human approval (docs/approvals.md): a 50,000 EUR transfer waits for two people with
    the payments-approver role; the requester's own approval does not count; the grant
    names both approvals and runs once through the gate. A second transfer is refused by
    one approver. Returns the approved execution's event id (its evidence holds the
    approvals), None when the transfer did not wait (a failed step is recorded)."""
    client = demo.client
    assert client is not None
    asked = await transfer(demo, "invoices/*")
    if asked is None:
        return None
    rid = asked.request_id
    demo.record(f"payer transfers 50,000 EUR: waits for {asked.k} approvals",
                "PENDING payments-approver", None, "PENDING", asked.role).event_id = rid
    own = await send(demo, approver(demo, "payer").approve(rid, rid), rid)
    demo.record("payer approves its own transfer", "DENIED NOT_APPROVER",
                await client.decision(own, timeout=20))
    for who in ("ann", "ben"):
        await send(demo, approver(demo, who).approve(rid, rid, "invoice checked"), rid)
    granted = await client.decision(rid, timeout=20)
    step = demo.record("granted after ann and ben approve", "ALLOWED", granted)
    if isinstance(granted.event, AuthorizationGranted):
        named = sorted(k for k in granted.event.artifact.governance if k.startswith("approval."))
        step.reason = f"artifact names {', '.join(named)}"
    await demo.execute("gate: payer pays invoice 42 under the approved grant", "ALLOWED",
                       "payer", granted, "transfer", "payments/acme/invoices/42")
    executed = demo.steps[-1].event_id
    await demo.execute("gate: the single-use grant again", "REFUSED ARTIFACT_CONSUMED",
                       "payer", granted, "transfer", "payments/acme/invoices/43")
    other = await transfer(demo, "suppliers/*")
    if other is None:
        return executed
    await send(demo, approver(demo, "ann").refuse(other.request_id, other.request_id,
                                                  "unknown supplier"), other.request_id)
    demo.record("ann refuses a second transfer", "DENIED APPROVAL_REFUSED",
                await client.decision(other.request_id, timeout=20))
    return executed


async def transfer(demo: Demo, resource: str) -> ApprovalRequired | None:
    """The payer's request for a large single-use transfer, once it is pending (None, and a
    failed step, when it was decided at once)."""
    assert demo.client is not None
    asked = demo.request("payer", ("transfer",), f"payments/acme/{resource}",
                         ttl=timedelta(minutes=30)).model_copy(
        update={"single_use": True, "context": LARGE})
    request_id = await demo.client.submit(asked, demo.agents["payer"].signer)
    answer = await demo.client.answer(request_id, timeout=20)
    if isinstance(answer, ApprovalRequired):
        return answer
    demo.record(f"payer transfers 50,000 EUR to {resource}", "PENDING", answer)
    return None


async def send(demo: Demo, approval: bytes, root: str) -> str:
    """Send a signed approval on the requests stream, keyed by its tree; returns its id."""
    assert demo.client is not None
    await demo.client.send_raw("requests", approval, root)
    return envelope_event_id(parse_envelope(approval).payload)


def approver(demo: Demo, who: str) -> Approver:
    agent = demo.agents[who]
    return Approver(agent.identity, "acme", agent.signer,
                    clock=lambda: datetime.now(UTC).replace(microsecond=0))
