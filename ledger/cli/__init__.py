"""``govledger``: one command per library call.

Exit codes: 0 ok; 1 verification failed or denied; 2 usage or configuration error;
3 the system is unavailable (broker, ledger). ``main()`` catches GovLedgerError once.

This module is the command tree: every command name and the function that runs it, in the
order ``--help`` lists them. The commands live by what they do:

- ``events_commands``: offline keys, envelopes and schemas (keys, events, schema)
- ``ledger_commands``: the data directory and the Merkle ledger (init, ledger ...)
- ``service_commands``: run the service or a part of it (up, processor, sequencer, api,
  topics, demo)
- ``client_commands``: talk to a running service (submit, decision, exec)
- ``policy_commands``: Cedar policy bundles offline (policy validate, test, explain)
- ``witness_commands``: run a witness that cosigns logs' checkpoints (witness ...)
- ``token_commands``: API bearer tokens (tokens create)
- ``gateway_commands``: the MCP gateway in front of MCP servers (mcp-gateway)
- ``monitor_commands``: the governance monitor (monitor, alerts, unused-grants)
- ``options``: the exit codes, options and output they share
"""

from __future__ import annotations

import sys
from importlib.metadata import version as package_version
from typing import Annotated, NoReturn

import typer

from ledger.cli import (
    approval_commands,
    client_commands,
    events_commands,
    gateway_commands,
    governance_commands,
    ledger_commands,
    monitor_commands,
    policy_commands,
    service_commands,
    tiles_commands,
    token_commands,
    witness_commands,
)
from ledger.cli.events_commands import add_to_keyring
from ledger.cli.options import (
    LogLevel,
    set_log_level,
)
from ledger.errors import GovLedgerError, ProofError, Unavailable, exit_status

__all__ = ["add_to_keyring", "app", "main"]

app = typer.Typer(
    name="govledger",
    help=(
        "Pre-execution authorization for autonomous systems: signed requests, fail-closed "
        "decisions, and a Merkle ledger anyone can verify offline."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"govledger {package_version('govledger')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False,
    log_level: Annotated[LogLevel | None, typer.Option(
        "--log-level", envvar="GOVLEDGER_LOG_LEVEL", case_sensitive=False,
        help="Log level of the long-running commands (up, processor, sequencer, api: default "
        "info; demo: warning).")] = None,
) -> None:
    """Pre-execution authorization for autonomous systems: signed requests, fail-closed
    decisions, and a Merkle ledger anyone can verify offline."""
    set_log_level(log_level)

keys_app = typer.Typer(help="Generate Ed25519 keys and keyrings.", no_args_is_help=True)
events_app = typer.Typer(help="Sign and verify DSSE event envelopes.", no_args_is_help=True)
schema_app = typer.Typer(help="The published JSON Schemas.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")
app.add_typer(schema_app, name="schema")
ledger_app = typer.Typer(help="The Merkle ledger: append, prove, verify, audit.",
                         no_args_is_help=True)
prove_app = typer.Typer(help="Export proof bundles that verify offline.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
ledger_app.add_typer(prove_app, name="prove")
app.add_typer(ledger_app, name="ledger")
app.add_typer(topics_app, name="topics")
policy_app = typer.Typer(help="Cedar policy bundles: validate, test and explain offline, on "
                         "the processor's own entity model and decision rule; publish and "
                         "promote them live; compare a shadow policy with the enforced one.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

keys_app.command("generate")(events_commands.keys_generate)
events_app.command("sign")(events_commands.events_sign)
events_app.command("verify")(events_commands.events_verify)
schema_app.command("export")(events_commands.schema_export)

ledger_app.command("init")(ledger_commands.ledger_init)
app.command("init")(ledger_commands.init)
ledger_app.command("append")(ledger_commands.ledger_append)
ledger_app.command("info")(ledger_commands.ledger_info_cmd)
ledger_app.command("checkpoint")(ledger_commands.ledger_checkpoint)
prove_app.command("inclusion")(ledger_commands.prove_inclusion_cmd)
prove_app.command("consistency")(ledger_commands.prove_consistency_cmd)
prove_app.command("lineage")(ledger_commands.prove_lineage_cmd)
ledger_app.command("verify")(ledger_commands.ledger_verify)
ledger_app.command("audit")(ledger_commands.ledger_audit)
ledger_app.command("export-tiles")(tiles_commands.export_tiles_cmd)
ledger_app.command("mirror")(tiles_commands.mirror_cmd)

topics_app.command("create")(service_commands.topics_create)
app.command("up")(service_commands.up)
app.command("processor")(service_commands.processor)
app.command("sequencer")(service_commands.sequencer)
app.command("api")(service_commands.api)
app.command("health")(service_commands.health)

app.command("submit")(client_commands.submit)
app.command("decision")(client_commands.decision)
app.command("exec", context_settings={"allow_extra_args": True,
                                      "ignore_unknown_options": True})(client_commands.exec_gated)

tokens_app = typer.Typer(help="API bearer tokens bound to a principal.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
tokens_app.command("create")(token_commands.tokens_create)

app.command("demo")(service_commands.demo)
app.command("mcp-gateway")(gateway_commands.mcp_gateway)

principal_app = typer.Typer(help="Principals and their keys, live (governance events).",
                            no_args_is_help=True)
tenant_app = typer.Typer(help="The kill switch for a whole tenant.", no_args_is_help=True)
governance_app = typer.Typer(help="Approvals, the quorum, and the state at any leaf.",
                             no_args_is_help=True)
app.add_typer(principal_app, name="principal")
app.add_typer(tenant_app, name="tenant")
app.add_typer(governance_app, name="governance")
principal_app.command("register")(governance_commands.principal_register)
principal_app.command("revoke")(governance_commands.principal_revoke)
principal_app.command("suspend")(governance_commands.principal_suspend)
principal_app.command("resume")(governance_commands.principal_resume)
tenant_app.command("suspend")(governance_commands.tenant_suspend)
tenant_app.command("resume")(governance_commands.tenant_resume)
policy_app.command("publish")(governance_commands.policy_publish)
policy_app.command("promote")(governance_commands.policy_promote)
governance_app.command("approve")(governance_commands.governance_approve)
governance_app.command("configure")(governance_commands.governance_configure)
governance_app.command("state")(governance_commands.governance_state)
policy_app.command("validate")(policy_commands.policy_validate)
policy_app.command("test")(policy_commands.policy_test)
policy_app.command("explain")(policy_commands.policy_explain)
policy_app.command("shadow-report")(policy_commands.policy_shadow_report)
witness_app = typer.Typer(help="Run a C2SP tlog-witness that cosigns logs' checkpoints.",
                          no_args_is_help=True)
app.add_typer(witness_app, name="witness")
witness_app.command("init")(witness_commands.witness_init)
witness_app.command("add-log")(witness_commands.witness_add_log)
witness_app.command("serve")(witness_commands.witness_serve)
app.command("monitor")(monitor_commands.monitor)
app.command("alerts")(monitor_commands.alerts)
app.command("unused-grants")(monitor_commands.unused_grants_cmd)

approvals_app = typer.Typer(help="Human approval: requests that wait for people, approve or "
                            "refuse them (docs/approvals.md).", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
approvals_app.command("list")(approval_commands.approvals_list)
approvals_app.command("show")(approval_commands.approvals_show)
approvals_app.command("approve")(approval_commands.approvals_approve)
approvals_app.command("refuse")(approval_commands.approvals_refuse)


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"govledger: {message}", err=True)
    sys.exit(code)


def main() -> None:
    """Console entry point: the one place GovLedgerError becomes an exit code."""
    try:
        app(standalone_mode=True)
    except GovLedgerError as exc:
        prefix = ("verification failed: " if isinstance(exc, ProofError)
                  else "unavailable: " if isinstance(exc, Unavailable) else "")
        fail(f"{prefix}{exc}", exit_status(exc))
