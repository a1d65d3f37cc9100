"""A key registered live (a signed PrincipalRegistered while the service runs) is known to
the tools of the data directory, not only to the service (issue 13): ``govledger tokens
create`` binds a token to it, and an MCP gateway started for that agent runs its calls. A
key revoked live is refused by ``tokens create``. Real embedded broker, real SQLite, the
gateway and the test MCP server as subprocesses."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from ledger.core.envelope import event_id, parse_envelope
from ledger.core.keys import KeyRing
from ledger.datadir import DataDir
from ledger.keyfiles import generate_keypair, load_signer
from ledger.log.governance import OPERATOR_IDENTITY, keyring_in_force
from ledger.sdk.client import Client
from ledger.sdk.governance import Admin
from tests.gateway_support import GOVLEDGER, World, gateway, reached

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("live-keys"))
    try:
        yield built
    finally:
        built.stop()


def govern(world: World, envelope: bytes) -> None:
    """Send a governance event, wait for its acknowledgement and for the ledger to hold it
    (the tools read the keys in force from the ledger)."""
    service = world.running.service

    async def send() -> None:
        async with Client(world.running.settings, service.bootstrap, service.keyring) as client:
            await client.send_raw("governance", envelope, "governance")
            applied = await client.decision(event_id(parse_envelope(envelope).payload), 30)
            assert applied.allow, applied.reasons
    asyncio.run(send())


def wait_for_keys(data: Path, check: object, timeout_s: float = 30) -> KeyRing:
    give_up = time.monotonic() + timeout_s
    while True:
        ring = keyring_in_force(data)
        if check(ring):  # type: ignore[operator]
            return ring
        assert time.monotonic() < give_up, "the ledger never showed the governance change"
        time.sleep(0.1)


def tokens_create(data: Path, identity: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOVLEDGER, "tokens", "create", identity, "--data", str(data),
                           "--out", str(out)], capture_output=True, text=True, timeout=60,
                          check=False)


def admin(world: World) -> Admin:
    return Admin(OPERATOR_IDENTITY, "*", load_signer(DataDir(world.data).operator_key))


def test_a_key_registered_live_gets_a_token_and_a_revoked_one_does_not(
        world: World, tmp_path: Path) -> None:
    newbie, _, _ = generate_keypair("newbie", tmp_path / "keys")
    assert tokens_create(world.data, "agent:newbie", tmp_path / "early.token").returncode == 2
    govern(world, admin(world).register("agent:newbie", newbie.public_key,
                                        ("reader", "requester"), tenant="acme"))
    wait_for_keys(world.data, lambda ring: newbie.key_id in ring)
    made = tokens_create(world.data, "agent:newbie", tmp_path / "newbie.token")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "newbie.token").read_text().startswith("glt_")
    govern(world, admin(world).revoke(newbie.key_id, tenant="acme"))
    wait_for_keys(world.data, lambda ring: ring.get(newbie.key_id).revoked_at is not None)
    refused = tokens_create(world.data, "agent:newbie", tmp_path / "late.token")
    assert refused.returncode == 2 and "0 keys in force" in refused.stderr, refused.stderr


def test_a_gateway_runs_for_an_agent_registered_live(world: World, tmp_path: Path) -> None:
    agent, agent_key, _ = generate_keypair("late-agent", tmp_path / "keys")
    govern(world, admin(world).register("agent:late", agent.public_key,
                                        ("reader", "requester"), tenant="acme"))
    wait_for_keys(world.data, lambda ring: agent.key_id in ring)
    config, calls = world.config(key=agent_key)
    args = {"database": "orders", "table": "late"}

    async def scenario() -> object:
        async with gateway(config) as session:
            return await session.call_tool("query", args)

    result = anyio.run(scenario)
    assert not result.is_error, result  # type: ignore[attr-defined]
    assert reached(calls) == [{"tool": "query", "arguments": args}]
