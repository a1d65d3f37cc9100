"""The MCP gateway end to end: a real MCP client (the SDK's ClientSession), ``govledger
mcp-gateway`` as a subprocess, and a real MCP server (tests/mcp_upstream.py, the SDK's
MCPServer) on the embedded broker with the processor and the sequencer.

The upstream appends every call that reaches it to a file: "never reached" is read there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ledger.core.envelope import parse_envelope
from ledger.core.events import AuthorizationRevoked
from ledger.sdk.client import Client
from tests.factories import ENV, request
from tests.gateway_support import (
    ARGS,
    ENV_VARS,
    GOVLEDGER,
    UPSTREAM,
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
from tests.service_support import REVOKER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("gateway"))
    try:
        yield built
    finally:
        built.stop()


def test_an_allowed_call_reaches_the_server_and_is_in_the_ledger_with_its_lineage(
        world: World) -> None:
    config, calls = world.config()

    async def scenario() -> Any:
        async with gateway(config) as session:
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert {"query", "write_row", "unmapped"} <= names
            return await session.call_tool("query", ARGS)

    result = anyio.run(scenario)
    assert not result.is_error
    assert result.content[0].text == "rows of orders/t1"
    assert reached(calls) == [{"tool": "query", "arguments": ARGS}]
    done = wait_for("ExecutionCompleted", lambda: reports_with(
        world.data, "ExecutionCompleted", digest(ARGS)))
    assert done[0]["result_digest"] == digest(result.model_dump(
        mode="json", by_alias=True, exclude_none=True))
    completed_id = next(eid for eid, p in ledger_events(world.data, "ExecutionCompleted")
                        if p["arguments_digest"] == digest(ARGS))
    bundle = wait_for("the lineage bundle", lambda: lineage_bundle(world, completed_id))
    hops = [hop_payload(hop) for hop in bundle["hops"]]
    assert [hop["kind"] for hop in hops] == [
        "ExecutionCompleted", "ExecutionRequested", "AuthorizationGranted",
        "AuthorizationRequested"]
    request = hops[-1]
    assert request["signer"] == "agent:gw-alice"
    assert request["scope"] == {"actions": ["read"], "resource": "db/orders/t1"}


@pytest.mark.parametrize(("tool", "arguments", "reason", "code"), [
    ("write_row", {**ARGS, "row": "x"}, "POLICY_DENY", -32010),
    ("unmapped", {}, "TOOL_NOT_MAPPED", -32010),
    ("query", {"database": "orders", "table": "t1/../../secrets"}, "ARGUMENT_MISMATCH", -32602),
    ("query", {"database": "orders", "table": "*"}, "ARGUMENT_MISMATCH", -32602),
    ("query", {"database": "orders"}, "ARGUMENT_MISMATCH", -32602),
    ("query", {**ARGS, "padding": "x" * 4096}, "OVERSIZED", -32602),
])
def test_a_refused_call_never_reaches_the_server_and_names_its_reason(
        world: World, tool: str, arguments: dict[str, Any], reason: str, code: int) -> None:
    config, calls = world.config()

    async def scenario() -> MCPError:
        async with gateway(config) as session:
            with pytest.raises(MCPError) as caught:
                await session.call_tool(tool, arguments)
            # The gateway stays up: the next, allowed call goes through.
            assert not (await session.call_tool("query", ARGS)).is_error
            return caught.value

    error = anyio.run(scenario)
    assert (error.code, error.data["reason"]) == (code, reason)
    assert error.message.startswith(reason)
    assert reached(calls) == [{"tool": "query", "arguments": ARGS}]


def test_a_revoked_artifact_stops_the_next_call(world: World) -> None:
    config, calls = world.config()
    args = {"database": "orders", "table": "revoked"}

    async def scenario() -> MCPError:
        async with gateway(config) as session:
            assert not (await session.call_tool("query", args)).is_error
            await _revoke_grant_for(world, "db/orders/revoked")
            with pytest.raises(MCPError) as caught:
                await session.call_tool("query", args)
            return caught.value

    error = anyio.run(scenario)
    assert error.data["reason"] == "ARTIFACT_REVOKED"
    assert reached(calls) == [{"tool": "query", "arguments": args}]


async def _revoke_grant_for(world: World, resource: str) -> None:
    grants = [(eid, p) for eid, p in ledger_events(world.data, "AuthorizationGranted")
              if p["artifact"]["scope"]["resource"] == resource]
    assert len(grants) == 1, grants
    artifact_id, payload = grants[0]
    await _revoke_artifact(world, artifact_id, payload["artifact"]["lineage"]["root"])


async def _revoke_artifact(world: World, artifact_id: str, root: str) -> None:
    service = world.running.service
    async with Client(world.running.settings, service.bootstrap, service.keyring) as client:
        revocation = AuthorizationRevoked(
            signer="ops:revoker", tenant="acme", nonce=f"gateway-revoke-{artifact_id[:16]}",
            issued_at=client.clock(), artifact_id=artifact_id, root=root, reason="test")
        applied = await client.decision(await client.revoke(revocation, REVOKER), 20)
        assert applied.allow, applied.reasons


def test_a_sub_agent_runs_under_a_delegated_artifact_and_the_lineage_shows_both_agents(
        world: World) -> None:
    """alice holds nothing herself: she asks for an artifact *held by* the sub-agent (read on
    db/orders/*); the sub-agent's gateway gets it in ``_meta`` and requests a narrower
    child per call. Revoking alice's artifact stops the sub-agent's next call."""
    config, calls = world.config(key=world.sub_key)
    parent = asyncio.run(_grant_for_sub_agent(world))
    meta = {"govledger/parent": parent.decode()}
    wider = {"database": "users", "table": "t9"}
    args = {"database": "orders", "table": "delegated"}

    async def scenario() -> tuple[MCPError, MCPError]:
        async with gateway(config) as session:
            assert not (await session.call_tool("query", args, meta=meta)).is_error
            with pytest.raises(MCPError) as widening:
                await session.call_tool("query", wider, meta=meta)
            await _revoke(world, parent)
            with pytest.raises(MCPError) as revoked:
                await session.call_tool("query", args, meta=meta)
            return widening.value, revoked.value

    widening, revoked = anyio.run(scenario)
    assert widening.data["reason"] == "SCOPE_WIDENING"
    assert revoked.data["reason"] == "ARTIFACT_REVOKED"
    assert reached(calls) == [{"tool": "query", "arguments": args}]
    completed_id = wait_for("ExecutionCompleted", lambda: [
        eid for eid, p in ledger_events(world.data, "ExecutionCompleted")
        if p["arguments_digest"] == digest(args)])[0]
    bundle = wait_for("the lineage bundle", lambda: lineage_bundle(world, completed_id))
    hops = [hop_payload(hop) for hop in bundle["hops"]]
    assert [(h["kind"], h["signer"]) for h in hops] == [
        ("ExecutionCompleted", "agent:gw-sub"), ("ExecutionRequested", "agent:gw-sub"),
        ("AuthorizationGranted", "govledger:authority"),
        ("AuthorizationRequested", "agent:gw-sub"),
        ("AuthorizationGranted", "govledger:authority"),
        ("AuthorizationRequested", "agent:gw-alice")]
    assert hops[3]["scope"]["resource"] == "db/orders/delegated"
    assert hops[5]["scope"]["resource"] == "db/orders/*"


async def _grant_for_sub_agent(world: World) -> bytes:
    return await _grant(world, holder="agent:gw-sub", nonce="gateway-delegate-0001")


async def _grant(world: World, *, holder: str | None, nonce: str) -> bytes:
    """alice's own grant of read on db/orders/*, held by ``holder`` (None: herself)."""
    service = world.running.service
    async with Client(world.running.settings, service.bootstrap, service.keyring) as client:
        ask = request(signer="agent:gw-alice", holder=holder, resource="db/orders/*",
                      nonce=nonce, issued_at=client.clock(), environments=(ENV,))
        decision = await client.decision(await client.submit(ask, world.alice), 20)
        assert decision.allow, decision.reasons
        return decision.envelope


async def _revoke(world: World, grant: bytes) -> None:
    verified = parse_envelope(grant)
    payload = json.loads(verified.payload)
    artifact_id = hashlib.sha256(verified.payload).hexdigest()
    await _revoke_artifact(world, artifact_id, payload["artifact"]["lineage"]["root"])


def test_an_upstream_that_crashes_hangs_or_fails_gives_an_error_and_a_failed_execution(
        world: World) -> None:
    """Each reached the upstream, so each has its ExecutionFailed (with the arguments'
    digest); the gateway stays up and reconnects to the crashed server."""
    config, calls = world.config()
    crash, hang = {"database": "crashdb"}, {"database": "hangdb", "seconds": 4}
    failing = {"database": "faildb"}

    async def scenario() -> tuple[MCPError, MCPError, Any]:
        async with gateway(config) as session:
            with pytest.raises(MCPError) as crashed:
                await session.call_tool("crash", crash)
            assert not (await session.call_tool("query", ARGS)).is_error  # reconnected
            with pytest.raises(MCPError) as hung:
                await session.call_tool("hang", hang)
            return crashed.value, hung.value, await session.call_tool("fail", failing)

    crashed, hung, failed = anyio.run(scenario)
    assert crashed.data["reason"] == "UPSTREAM_UNAVAILABLE"
    assert hung.data["reason"] == "UPSTREAM_TIMEOUT"
    assert failed.is_error and "locked" in failed.content[0].text
    assert [c["tool"] for c in reached(calls)] == ["crash", "query", "hang", "fail"]
    for arguments, error in ((crash, "UpstreamUnavailableError"),
                             (hang, "UpstreamTimeoutError"), (failing, "ToolReportedError")):
        report = wait_for(f"ExecutionFailed {error}", lambda a=arguments: reports_with(
            world.data, "ExecutionFailed", digest(a)))
        assert report[0]["error"] == error
    failed_report = reports_with(world.data, "ExecutionFailed", digest(failing))[0]
    assert failed_report["result_digest"] == digest(failed.model_dump(
        mode="json", by_alias=True, exclude_none=True))


def test_a_client_that_disconnects_mid_call_still_leaves_the_execution_in_the_ledger(
        world: World) -> None:
    config, calls = world.config()
    slow = {"database": "slowdb", "seconds": 1}

    async def scenario() -> None:
        async with gateway(config) as session, anyio.create_task_group() as group:
            group.start_soon(session.call_tool, "hang", slow)
            while not reached(calls):  # the call is at the upstream now
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()
        # leaving the block closed the gateway's stdin: the client is gone mid-call

    anyio.run(scenario)
    assert reached(calls) == [{"tool": "hang", "arguments": slow}]
    wait_for("ExecutionCompleted of the abandoned call",
             lambda: reports_with(world.data, "ExecutionCompleted", digest(slow)))


def test_malformed_messages_get_json_rpc_errors_and_the_gateway_stays_up(world: World) -> None:
    config, calls = world.config()
    lines = [
        b"this is not json\n",
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        b'"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}\n',
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
        b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":5}}\n',
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query",'
        b'"arguments":"not an object"}}\n',
        b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"query",'
        b'"arguments":{"database":"orders","table":"t1"}}}\n',
    ]
    proc = subprocess.Popen([GOVLEDGER, "mcp-gateway", "--config", str(config)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, **ENV_VARS})
    assert proc.stdin is not None and proc.stdout is not None
    answers: dict[int, dict[str, Any]] = {}
    try:
        for line in lines:
            proc.stdin.write(line)
        proc.stdin.flush()
        while 4 not in answers:  # each answer is a line; the last one we wait for is id 4
            answer = json.loads(proc.stdout.readline() or b"{}")
            assert answer, "the gateway closed its stdout"
            answers[answer.get("id", -1)] = answer
    finally:
        proc.stdin.close()
        code = proc.wait(timeout=60)
        proc.stdout.close()
    assert code == 0
    assert answers[2]["error"]["code"] == -32602
    assert answers[3]["error"]["code"] == -32602
    assert answers[4]["result"]["content"][0]["text"] == "rows of orders/t1"
    assert reached(calls) == [{"tool": "query", "arguments": ARGS}]


def test_the_gateway_serves_streamable_http_in_front_of_a_streamable_http_upstream(
        world: World, tmp_path: Path) -> None:
    port = free_port()
    calls = tmp_path / "http-calls.jsonl"
    calls.touch()
    upstream = subprocess.Popen([sys.executable, UPSTREAM, "http", str(port)],
                                env={**os.environ, "MCP_UPSTREAM_CALLS": str(calls)})
    config, _ = world.config()
    text = config.read_text()
    text = text[:text.index("[upstreams.db]")] + (
        f'[upstreams.db]\nurl = "http://127.0.0.1:{port}/mcp"\n' + text[text.index("\n[tools"):])
    config.write_text(text)
    log = (tmp_path / "gateway.log").open("wb")
    gw = subprocess.Popen([GOVLEDGER, "mcp-gateway", "--config", str(config), "--transport",
                           "http", "--port", "0"], stderr=log, env={**os.environ, **ENV_VARS})
    try:
        url = wait_for("the gateway's URL", lambda: announced(tmp_path / "gateway.log"))

        async def scenario() -> Any:
            async with streamable_http_client(url) as (read, write, *_), \
                    ClientSession(read, write) as session:
                await session.initialize()
                with pytest.raises(MCPError) as denied:
                    await session.call_tool("write_row", {**ARGS, "row": "x"})
                assert denied.value.data["reason"] == "POLICY_DENY"
                return await session.call_tool("query", ARGS)

        result = anyio.run(scenario)
        assert result.content[0].text == "rows of orders/t1"
        assert reached(calls) == [{"tool": "query", "arguments": ARGS}]
    finally:
        for proc in (gw, upstream):
            proc.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=60) == 0
        upstream.wait(timeout=60)
        log.close()


def announced(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("govledger: mcp "):
            return line.split()[2]
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_bad_config_stops_the_gateway_at_start_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('agent_key = "k"\nallow_unlogged = true\n[upstreams.db]\ncommand = "x"\n'
                   '[tools.q]\naction = "read"\nresource = "db/{a}/*"\n')
    result = subprocess.run([GOVLEDGER, "mcp-gateway", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "tools.q.resource" in result.stderr and "no wildcard" in result.stderr


def test_the_agents_own_artifact_in_meta_is_used_as_it_is_and_checked_by_the_gate(
        world: World) -> None:
    """No request from the gateway: the call runs under the artifact the agent passed,
    within its scope only; ``hide_unmapped_tools`` leaves the unmapped tool out."""
    config, calls = world.config(extra="hide_unmapped_tools = true")
    grant = asyncio.run(_grant(world, holder=None, nonce="gateway-own-artifact-01"))
    meta = {"govledger/artifact": grant.decode()}
    inside = {"database": "orders", "table": "own"}

    async def scenario() -> tuple[set[str], MCPError, MCPError]:
        async with gateway(config) as session:
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert not (await session.call_tool("query", inside, meta=meta)).is_error
            with pytest.raises(MCPError) as outside:
                await session.call_tool("query", {"database": "users", "table": "x"},
                                        meta=meta)
            with pytest.raises(MCPError) as malformed:
                await session.call_tool("query", inside,
                                        meta={"govledger/artifact": {"not": "text"}})
            return names, outside.value, malformed.value

    names, outside, malformed = anyio.run(scenario)
    assert "unmapped" not in names and "query" in names
    assert outside.data["reason"] == "SCOPE_MISMATCH"
    assert malformed.data["reason"] == "MALFORMED"
    assert reached(calls) == [{"tool": "query", "arguments": inside}]
    artifact_id = hashlib.sha256(parse_envelope(grant).payload).hexdigest()
    report = wait_for("ExecutionCompleted", lambda: reports_with(
        world.data, "ExecutionCompleted", digest(inside)))
    assert report[0]["artifact_id"] == artifact_id
    requests = [p for _, p in ledger_events(world.data, "AuthorizationRequested")
                if p["scope"]["resource"] in ("db/orders/own", "db/users/x")]
    assert requests == []


def test_an_upstream_that_cannot_start_is_refused_before_anything_reaches_the_ledger(
        world: World) -> None:
    config, _ = world.config()
    config.write_text(config.read_text().replace(f'command = "{sys.executable}"',
                                                 'command = "/nonexistent/mcp-server"'))
    args = {"database": "orders", "table": "nowhere"}

    async def scenario() -> tuple[MCPError, MCPError]:
        async with gateway(config) as session:
            with pytest.raises(MCPError) as first:
                await session.call_tool("query", args)
            with pytest.raises(MCPError) as second:  # still up, still refusing
                await session.call_tool("query", args)
            return first.value, second.value

    for error in anyio.run(scenario):
        assert error.data["reason"] == "UPSTREAM_UNAVAILABLE"
    assert [p for _, p in ledger_events(world.data, "AuthorizationRequested")
            if p["scope"]["resource"] == "db/orders/nowhere"] == []
