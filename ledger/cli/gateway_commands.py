"""``govledger mcp-gateway``: the MCP gateway (ledger/gateway/) from one TOML file."""

from __future__ import annotations

import asyncio
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.cli.options import (
    DataOpt,
    JsonFlag,
    KafkaOpt,
    configure_logging,
    emit,
    read_envelope_file,
    settings_from,
)
from ledger.errors import ConfigError
from ledger.keyfiles import load_signer
from ledger.log.governance import keyring_in_force
from ledger.log.ledger_dir import read_vkey

if TYPE_CHECKING:
    from ledger.gateway.run import Loaded


class Transport(StrEnum):
    STDIO = "stdio"
    HTTP = "http"


def mcp_gateway(
    config: Annotated[Path, typer.Option("--config", help="The gateway's TOML file.")],
    transport: Annotated[Transport, typer.Option(
        help="stdio: serve the MCP client that started this process; http: streamable "
        "HTTP at /mcp.")] = Transport.STDIO,
    host: Annotated[str, typer.Option(help="HTTP: the address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: the port (0: a free one, printed).")] = 0,
    check: Annotated[bool, typer.Option(
        "--check", help="Validate the config and its key files, print a summary, exit.")
    ] = False,
    data: DataOpt = None, kafka: KafkaOpt = None, as_json: JsonFlag = False,
) -> None:
    """An MCP server in front of other MCP servers: every tools/call is authorized by
    govledger before it reaches the upstream, and its execution is reported to the ledger.

    The config maps each tool to an action and a resource template over its arguments
    (unmapped tools are denied); the agent's key signs the requests; the keys in force in
    --data's ledger (read at start; keyring.json on a host without the ledger) and its
    ledger.vkey verify the decisions and prove each artifact is logged. See docs/gateway.md.

    Example: govledger mcp-gateway --config gateway.toml --data govledger-data
    --kafka 127.0.0.1:9092
    """
    from ledger.gateway.config import load_config
    from ledger.gateway.run import Loaded, principal_of
    cfg = load_config(config)
    settings = settings_from(data or cfg.data, kafka or cfg.kafka)
    if settings.kafka_bootstrap is None:
        raise ConfigError("the gateway talks to a running service: give --kafka, kafka in "
                          "the config, or GOVLEDGER_KAFKA_BOOTSTRAP")
    keyring = keyring_in_force(settings.data_dir)
    agent = load_signer(cfg.agent_key)
    runtime = load_signer(cfg.runtime_key) if cfg.runtime_key is not None else agent
    loaded = Loaded(
        config=cfg, settings=settings, bootstrap=settings.kafka_bootstrap, keyring=keyring,
        agent=agent, runtime=runtime,
        vkey=None if cfg.api is None else read_vkey(settings.data_dir),
        parent=None if cfg.parent_artifact is None else read_envelope_file(cfg.parent_artifact))
    who = principal_of(keyring, agent, "agent_key")
    principal_of(keyring, runtime, "runtime_key")
    if check:
        summary: dict[str, object] = {
            "agent": who.identity, "tenant": who.tenant,
            "environment": cfg.measured_environment(), "upstreams": sorted(cfg.upstreams),
            "tools": {name: f"{rule.action} {rule.resource}"
                      for name, rule in sorted(cfg.tools.items())}}
        emit(summary, as_json, f"OK gateway for {who.identity}: "
             f"{len(cfg.upstreams)} upstream(s), {len(cfg.tools)} tool rule(s), "
             f"environment {summary['environment']}")
        return
    configure_logging()
    asyncio.run(_serve(loaded, transport, host, port))


async def _serve(loaded: Loaded, transport: Transport, host: str, port: int) -> None:
    from ledger.gateway.run import run_gateway
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_gateway(loaded, transport=transport.value, host=host, port=port, stop=stop)
