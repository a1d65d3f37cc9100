"""Compose and run the gateway: the SDK client on Kafka, the grants, the gate, the upstream
links and the MCP server. Keys, keyring and vkey come in loaded (the CLI reads the files)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from ledger.config import Settings
from ledger.core.artifact import CheckedArtifact
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.errors import ConfigError
from ledger.gateway.calls import CallPipeline
from ledger.gateway.config import GatewayConfig
from ledger.gateway.grants import Agent, Grants
from ledger.gateway.server import GatewayServer
from ledger.gateway.upstreams import links
from ledger.sdk.client import Client
from ledger.sdk.gate import Gate, LogCheck, http_log_check
from ledger.sdk.httpsig import SignedRequests

log = logging.getLogger("govledger.gateway")


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the files of the config hold, read and checked."""

    config: GatewayConfig
    settings: Settings
    bootstrap: str
    keyring: KeyRing
    agent: Signer
    runtime: Signer
    vkey: str | None
    parent: bytes | None


def principal_of(keyring: KeyRing, signer: Signer, what: str) -> Principal:
    """The keyring entry of ``signer``'s key. Raises ConfigError when it has none."""
    if signer.key_id not in keyring:
        raise ConfigError(f"{what}: its key is not in the keyring (key id {signer.key_id})")
    return keyring.get(signer.key_id)


async def run_gateway(loaded: Loaded, *, transport: Literal["stdio", "http"],
                      host: str = "127.0.0.1", port: int = 0,
                      stop: asyncio.Event | None = None) -> None:
    """Serve until the stdio client leaves or ``stop`` is set (HTTP); then let the calls in
    flight finish and report, and stop the upstreams. Raises ConfigError, Unavailable."""
    config = loaded.config
    agent = Agent(loaded.agent, principal_of(loaded.keyring, loaded.agent, "agent_key"))
    runtime = principal_of(loaded.keyring, loaded.runtime, "runtime_key")
    environment = config.measured_environment()
    check = None if config.api is None or loaded.vkey is None else \
        remember_logged(http_log_check(str(config.api).rstrip("/"), loaded.vkey,
                                       auth=SignedRequests(loaded.runtime)))
    async with Client(loaded.settings, loaded.bootstrap, loaded.keyring) as client:
        gate = Gate(client, loaded.runtime, runtime, loaded.keyring,
                    measure=lambda: environment, timeout=config.decision_timeout_s,
                    require_logged=check, allow_unlogged=config.allow_unlogged)
        grants = Grants(client, agent, loaded.keyring, environment=environment,
                        ttl_s=config.grant_ttl_s, timeout_s=config.decision_timeout_s,
                        parent=loaded.parent, approval_wait_s=config.approval_wait_s)
        async with links(dict(config.upstreams),
                         connect_timeout=config.connect_timeout_s) as upstreams:
            server = GatewayServer(CallPipeline(config, upstreams, grants, gate))
            log.info("gateway for %s (runtime %s, environment %s), upstreams %s",
                     agent.principal.identity, runtime.identity, environment,
                     ", ".join(upstreams))
            stop = stop or asyncio.Event()
            try:
                if transport == "stdio":
                    await _until(server.serve_stdio(), stop)
                else:
                    await server.serve_http(host, port, stop)
            finally:
                await server.drain(config.call_timeout_s + config.decision_timeout_s
                                   + config.approval_wait_s)


def remember_logged(check: LogCheck, limit: int = 4096) -> LogCheck:
    """``check``, asked once per artifact: the log is append-only, so an artifact proven
    included under a signed checkpoint stays proven (a reused artifact then costs no HTTP
    round trip). Only a proof is remembered; a failed check is asked again next time."""
    proven: OrderedDict[str, None] = OrderedDict()

    async def remembered(checked: CheckedArtifact) -> bool:
        if checked.artifact_id in proven:
            return True
        if not await check(checked):
            return False
        proven[checked.artifact_id] = None
        while len(proven) > limit:
            proven.popitem(last=False)
        return True
    return remembered


async def _until(serving: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``serving`` until it ends or ``stop`` is set (then cancel it)."""
    task = asyncio.create_task(serving)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
