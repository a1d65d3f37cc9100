"""Tool calls that need people (issue 17 item 5): the policy sends ``drop_table`` (action
``delete``) to one approver with the ``db-approver`` role. A real MCP client, the gateway
subprocess and the test upstream on the embedded broker, as in test_gateway.py.

The gateway waits up to ``approval_wait_s`` for the approver; past it the call fails with
APPROVAL_PENDING (retryable, naming the request), and a retry of the same call waits for the
*same* request. The upstream is reached only once the request is granted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import VerifiedEvent
from ledger.sdk.approvals import Approver
from ledger.sdk.client import Client
from tests.gateway_support import (
    World,
    digest,
    gateway,
    hop_payload,
    ledger_events,
    lineage_bundle,
    reached,
    reports_with,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
PENDING = -32013


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("gateway-approvals"))
    try:
        yield built
    finally:
        built.stop()


def ann(world: World) -> Approver:
    return Approver("human:gw-ann", "acme", world.ann)


def requests_for(world: World, resource: str) -> list[str]:
    return [eid for eid, p in ledger_events(world.data, "AuthorizationRequested")
            if p["scope"]["resource"] == resource]


async def pending_error(session: ClientSession, args: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(MCPError) as caught:
        await session.call_tool("drop_table", args)
    assert caught.value.code == PENDING, caught.value
    data: dict[str, Any] = caught.value.data
    return data


async def retried(session: ClientSession, args: dict[str, Any],
                  request_id: str) -> Any:
    """Retry the call, as an agent told APPROVAL_PENDING does, until it is not pending any
    more; each pending answer must name the same request. The result, or the MCPError."""
    with anyio.fail_after(60):
        while True:
            try:
                return await session.call_tool("drop_table", args)
            except MCPError as exc:
                if exc.code != PENDING:
                    return exc
                named = exc.data["request_id"]
            assert named == request_id  # never asked anew


async def answer(world: World, envelope: bytes, root: str) -> None:
    """Send an approver's signed answer on the requests stream (keyed by the root)."""
    service = world.running.service
    async with Client(world.running.settings, service.bootstrap, service.keyring) as client:
        await client.send_raw("requests", envelope, root)


def test_a_pending_call_fails_retryably_and_runs_once_approved(world: World) -> None:
    config, calls = world.config(extra="approval_wait_s = 1")
    args = {"database": "orders", "table": "dropme"}

    async def scenario() -> tuple[dict[str, Any], Any]:
        async with gateway(config) as session:
            first = await pending_error(session, args)
            again = await pending_error(session, args)  # the same request, waited for again
            assert again["request_id"] == first["request_id"]
            assert reached(calls) == []  # nothing runs before people say yes
            await answer(world, ann(world).approve(first["request_id"], first["root"],
                                                   "reviewed"), first["root"])
            return first, await retried(session, args, first["request_id"])

    first, result = anyio.run(scenario)
    assert (first["reason"], first["retry"], first["k"], first["role"]) == (
        "APPROVAL_PENDING", True, 1, "db-approver")
    assert first["request_id"] in first["detail"] and "deadline" in first
    assert not isinstance(result, MCPError), result
    assert result.content[0].text == "dropped orders/dropme"
    assert reached(calls) == [{"tool": "drop_table", "arguments": args}]
    assert requests_for(world, "db/orders/dropme") == [first["request_id"]]
    completed = wait_for("ExecutionCompleted", lambda: [
        eid for eid, p in ledger_events(world.data, "ExecutionCompleted")
        if p["arguments_digest"] == digest(args)])[0]
    bundle = wait_for("the lineage bundle", lambda: lineage_bundle(world, completed))
    kinds = [hop_payload(hop)["kind"] for hop in bundle["hops"]]
    assert kinds == ["ExecutionCompleted", "ExecutionRequested", "AuthorizationGranted",
                     "AuthorizationRequested"]
    approvals = [hop_payload(hop)["kind"] for hop in bundle["approvals"]]
    assert sorted(approvals) == ["ApprovalGiven", "ApprovalRequired"]


def test_a_refused_call_never_runs_and_the_next_call_asks_anew(world: World) -> None:
    config, calls = world.config(extra="approval_wait_s = 1")
    args = {"database": "orders", "table": "keepme"}

    async def scenario() -> tuple[dict[str, Any], Any, dict[str, Any]]:
        async with gateway(config) as session:
            first = await pending_error(session, args)
            await answer(world, ann(world).refuse(first["request_id"], first["root"],
                                                  "not today"), first["root"])
            refused = await retried(session, args, first["request_id"])
            return first, refused, await pending_error(session, args)

    first, refused, fresh = anyio.run(scenario)
    assert isinstance(refused, MCPError)
    assert (refused.code, refused.data["reason"]) == (-32010, "APPROVAL_REFUSED")
    assert fresh["request_id"] != first["request_id"]  # a refused request is not reused
    assert reached(calls) == []
    assert requests_for(world, "db/orders/keepme") == [first["request_id"],
                                                       fresh["request_id"]]
    assert reports_with(world.data, "ExecutionCompleted", digest(args)) == []


def test_a_call_approved_within_the_wait_runs_in_one_go(world: World) -> None:
    config, calls = world.config(extra="approval_wait_s = 120")
    args = {"database": "orders", "table": "quick"}

    async def scenario() -> Any:
        service = world.running.service
        asked: asyncio.Future[ApprovalRequired] = asyncio.get_running_loop().create_future()

        def seen(verified: VerifiedEvent) -> None:
            event = verified.event
            if (isinstance(event, ApprovalRequired) and not asked.done()
                    and event.artifact.scope.resource == "db/orders/quick"):
                asked.set_result(event)

        async with Client(world.running.settings, service.bootstrap,
                          service.keyring) as client, gateway(config) as session:
            client.on_pending.append(seen)
            call = asyncio.ensure_future(session.call_tool("drop_table", args))
            pending = await asyncio.wait_for(asked, 60)
            assert not call.done() and reached(calls) == []
            root = pending.artifact.lineage.root or pending.request_id
            await client.send_raw("requests", ann(world).approve(pending.request_id, root),
                                  root)
            return await asyncio.wait_for(call, 60)

    result = anyio.run(scenario, backend="asyncio")
    assert not result.is_error and result.content[0].text == "dropped orders/quick"
    assert reached(calls) == [{"tool": "drop_table", "arguments": args}]
