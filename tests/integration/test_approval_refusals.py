"""Approvals that cannot count, and what ends a pending request, on the real embedded broker
(issue 16 item 3): the service runs in process (broker, processor, sequencer, API), the SDK
sends signed approvals on the requests stream and reads the authority's signed answers.

Each refused approval gets an ``AuthorizationDenied`` naming the approval's own id, with its
reason, and leaves the request pending; a suspension or a revoked parent while pending ends
the request denied at the next input. The unit tests (tests/unit/test_approvals.py) check
the same rules on the pure engine; here they go through Kafka, the journal and the ledger."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.core.approval_events import ApprovalGiven, ApprovalRequired
from ledger.core.events import AuthorizationGranted, AuthorizationRevoked
from ledger.core.governance_events import PrincipalSuspended
from ledger.core.keys import Principal, principal_document
from ledger.datadir import DataDir
from ledger.keyfiles import load_signer
from ledger.log.governance import OPERATOR_IDENTITY
from ledger.sdk.client import Client
from tests.e2e.test_approvals_live import ANN, BEN, PAYER, PEOPLE, transfer
from tests.factories import ALICE, request, seeded_signer
from tests.service_support import REVOKER, Running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SELFISH = seeded_signer("selfish")   # asks, and holds the approver role itself
ZED = seeded_signer("zed")           # an approver of another tenant
VAULT = """@id("vault-write-approved")
@approval("role=payments-approver,k=1,ttl=600")
permit (principal, action == Action::"write", resource in Resource::"vault/*")
when { principal.roles.contains("payments-large") };

@id("deploy-approved-quickly")
@approval("role=payments-approver,k=1,ttl=2")
permit (principal, action == Action::"deploy", resource in Resource::"vault/*")
when { principal.roles.contains("payments-large") };
"""
MORE = [
    Principal("agent:selfish", "acme", SELFISH.public_key,
              frozenset({"requester", "payments", "payments-large", "payments-approver"})),
    Principal("human:zed", "globex", ZED.public_key, frozenset({"payments-approver"})),
]


def prepare(data: Path) -> None:
    keyring = DataDir(data).keyring
    doc = json.loads(keyring.read_text())
    doc["principals"] += [dict(principal_document(p)) for p in (*PEOPLE, *MORE)]
    keyring.write_text(json.dumps(doc, indent=2))
    (data / "policies" / "vault.cedar").write_text(VAULT)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def approval(who: str, tenant: str, request_id: str, root: str, nonce: str) -> ApprovalGiven:
    return ApprovalGiven(signer=who, tenant=tenant, nonce=nonce, issued_at=now(),
                         request_id=request_id, root=root)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("approval-refusals") / "data"
    service = Running(data, before_start=lambda: prepare(data))
    try:
        yield service
    finally:
        service.stop()


async def pending_request(client: Client, asked: object, signer: object) -> str:
    """Submit ``asked`` and return its id once the authority answered ApprovalRequired."""
    rid = await client.submit(asked, signer)  # type: ignore[arg-type]
    answer = await client.answer(rid, 30)
    assert isinstance(answer, ApprovalRequired), answer
    return rid


async def refused(client: Client, who: str, tenant: str, signer: object, rid: str,
                  nonce: str, root: str | None = None) -> list[str]:
    """The reasons the authority gave for an approval (its own id is the subject)."""
    sent = await client.send("requests", approval(who, tenant, rid, root or rid, nonce),
                             signer)  # type: ignore[arg-type]
    denied = await client.decision(sent, 30)
    assert not denied.allow
    return list(denied.reasons)


def test_each_approval_that_cannot_count_is_refused_and_the_request_still_waits(
        running: Running) -> None:
    service = running.service

    async def flow() -> None:
        async with Client(running.settings, service.bootstrap, service.keyring) as client:
            rid = await pending_request(client, transfer("refusals-payer-0001"), PAYER)
            own = await pending_request(client, transfer("refusals-self-00001").model_copy(
                update={"signer": "agent:selfish"}), SELFISH)
            plain = await client.request(request(nonce="refusals-plain-0001", issued_at=now()),
                                         ALICE, 30)
            assert plain.allow, plain.reasons
            # ann's first approval counts (1 of 2): no answer yet, the request waits
            counted = await client.send("requests", approval(
                "human:ann", "acme", rid, rid, "refusals-ann-00001"), ANN)
            cases = [
                (await refused(client, "agent:alice", "acme", ALICE, rid,
                               "refusals-alice-0001"), "NOT_APPROVER"),
                (await refused(client, "human:zed", "globex", ZED, rid,
                               "refusals-zed-000001"), "TENANT_MISMATCH"),
                (await refused(client, "agent:selfish", "acme", SELFISH, own,
                               "refusals-self-00002"), "SELF_APPROVAL"),
                (await refused(client, "human:ann", "acme", ANN, rid,
                               "refusals-ann-00002"), "APPROVAL_DUPLICATE"),
                (await refused(client, "human:ann", "acme", ANN, plain.subject_id,
                               "refusals-ann-00003"), "NOT_PENDING"),
            ]
            assert [got for got, _ in cases] == [[want] for _, want in cases]
            assert client.pending(rid) is not None and client.pending(own) is not None
            # none of them counted: ben's approval is the second of two, and grants
            await client.send("requests", approval("human:ben", "acme", rid, rid,
                                                   "refusals-ben-00001"), BEN)
            granted = await client.decision(rid, 30)
            assert granted.allow, granted.reasons
            assert isinstance(granted.event, AuthorizationGranted)
            names = {k for k in granted.event.artifact.governance if k.startswith("approval.")}
            assert names == {"approval.required", "approval.1", "approval.2"}
            assert granted.event.artifact.governance["approval.1"] == counted
    asyncio.run(flow())


def test_a_suspension_or_a_revoked_parent_while_pending_ends_the_request_denied(
        running: Running) -> None:
    service = running.service
    operator = load_signer(DataDir(running.settings.data_dir).operator_key)

    async def flow() -> None:
        async with Client(running.settings, service.bootstrap, service.keyring) as client:
            # A parent grant of write on vault/* (one approval), then a child under it that
            # waits for its own approval; revoking the parent ends the child.
            parent_id = await pending_request(client, request(
                signer="agent:payer", nonce="ends-parent-000001", actions=("write",),
                resource="vault/*", issued_at=now(), ttl=timedelta(minutes=30)), PAYER)
            await client.send("requests", approval("human:ann", "acme", parent_id, parent_id,
                                                   "ends-ann-00000001"), ANN)
            parent = await client.decision(parent_id, 30)
            assert parent.allow, parent.reasons
            child_id = await pending_request(client, request(
                signer="agent:payer", nonce="ends-child-0000001", actions=("write",),
                resource="vault/keys", issued_at=now(), ttl=timedelta(minutes=10),
                root=parent_id, parent=parent.verified.event_id), PAYER)
            revoked = await client.decision(await client.revoke(AuthorizationRevoked(
                signer="ops:revoker", tenant="acme", nonce="ends-revoke-000001",
                issued_at=now(), artifact_id=parent.verified.event_id, root=parent_id,
                reason="test"), REVOKER), 30)
            assert revoked.allow, revoked.reasons
            # The selfish agent's request waits; suspending it ends that request.
            held = await pending_request(client, transfer("ends-self-00000001").model_copy(
                update={"signer": "agent:selfish"}), SELFISH)
            suspended = await client.decision(await client.send("governance", PrincipalSuspended(
                signer=OPERATOR_IDENTITY, tenant="acme", nonce="ends-suspend-00001",
                issued_at=now(), identity="agent:selfish"), operator), 30)
            assert suspended.allow, suspended.reasons
            # Both end at the next input on a tree stream: here, an approval for each.
            late = await refused(client, "human:ben", "acme", BEN, child_id,
                                 "ends-ben-00000001", root=parent_id)
            assert late == ["NOT_PENDING"]  # the request ended before it was counted
            ended_child = await client.decision(child_id, 30)
            ended_held = await client.decision(held, 30)
            assert (ended_child.allow, ended_child.reasons) == (False, ("PARENT_REVOKED",))
            assert (ended_held.allow, ended_held.reasons) == (False, ("PRINCIPAL_SUSPENDED",))
    asyncio.run(flow())


def test_a_deadline_ends_the_request_with_no_input_arriving(running: Running) -> None:
    """The deploy policy gives approvers 2 seconds; nobody answers and nothing else is sent:
    the processor ends the request APPROVAL_EXPIRED on its own, journaled and ledgered."""
    service = running.service

    async def flow() -> None:
        async with Client(running.settings, service.bootstrap, service.keyring) as client:
            rid = await pending_request(client, request(
                signer="agent:payer", nonce="idle-deploy-000001", actions=("deploy",),
                resource="vault/app", issued_at=now()), PAYER)
            asked = client.pending(rid)
            assert asked is not None
            ended = await client.decision(rid, 30)
            assert (ended.allow, ended.reasons) == (False, ("APPROVAL_EXPIRED",))
            assert ended.event.issued_at >= asked.deadline  # not before the deadline
    asyncio.run(flow())
