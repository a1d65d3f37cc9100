"""Governance from the command line: principals, tenants, policies and the rules, as signed
governance events sent to a running service (``POST /v1/events?wait=S``), and the state at
any leaf of a ledger, offline (docs/governance.md).

Every sending command signs with an admin key (``--key``, default ./govledger-data/keys/
operator.key, the operator's) under the admin's identity (``--as``) and waits for the
authority's answer once it is in the ledger. Exit codes: 0 applied (in force), 1 refused
(the reason is printed), 2 usage, 3 service unavailable, 4 pending (the quorum needs more
admins' approvals, or no answer within ``--wait``).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.client_commands import ApiUrl, http_call
from ledger.cli.options import EXIT_INVALID, DataOpt, JsonFlag, emit, settings_from
from ledger.errors import ConfigError
from ledger.keyfiles import load_public_key, load_signer
from ledger.sdk.governance import Admin
from ledger.sdk.httpsig import SignedRequests

EXIT_PENDING = 4

KeyOpt = Annotated[Path, typer.Option(
    "--key", envvar="GOVLEDGER_ADMIN_KEY",
    help="The admin's private key file (default: the operator's, keys/operator.key).")]
AsOpt = Annotated[str, typer.Option(
    "--as", envvar="GOVLEDGER_ADMIN_IDENTITY", help="The admin's identity.")]
AdminTenantOpt = Annotated[str, typer.Option(
    "--admin-tenant", help="The tenant the admin governs (* for the operator).")]
TenantOpt = Annotated[str, typer.Option("--tenant", help="The tenant governed.")]
WaitOpt = Annotated[float, typer.Option(help="Seconds to wait for the answer (0-30).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")]
DEFAULT_KEY = Path("govledger-data/keys/operator.key")
OPERATOR = "govledger:operator"


def _admin(key: Path, identity: str, tenant: str) -> Admin:
    return Admin(identity, tenant, load_signer(key))


def _send(admin: Admin, envelope: bytes, api_url: str, wait: float, as_json: bool) -> None:
    """Submit (the request signed with the admin's key: reading the answer needs a
    reader, and admins read their tenant's), wait for the answer, print it; exit as the
    module docstring says."""
    response = http_call("POST", api_url, "/v1/events", content=envelope,
                         params={"wait": wait}, timeout=wait + 15,
                         auth=SignedRequests(admin.signer))
    body = response.json()
    if response.status_code == 202:
        emit(body, as_json, f"PENDING {body['event_id']}: no answer yet (a quorum waits for "
             "approvals: govledger governance approve)")
        raise typer.Exit(EXIT_PENDING)
    if response.status_code != 200:
        emit(body, as_json, f"REFUSED {body.get('reason')}: {body.get('detail', '')}")
        raise typer.Exit(EXIT_INVALID)
    answer = body["decision"]
    if not answer["allow"]:
        reasons = ",".join(answer.get("reasons") or [])
        emit(body, as_json, f"REFUSED {reasons}: {_detail(answer['envelope'])}")
        raise typer.Exit(EXIT_INVALID)
    emit(body, as_json, f"APPLIED {body['kind']} {body['event_id']}")


def _detail(envelope: str) -> str:
    """The ``detail`` of a denial envelope (shown, not trusted: the API verified it)."""
    try:
        payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    except (ValueError, KeyError, TypeError):
        return ""
    return str(payload.get("detail", "")) if isinstance(payload, dict) else ""


def principal_register(
    identity: Annotated[str, typer.Argument(help="The new principal's identity.")],
    public_key: Annotated[Path, typer.Option("--public-key", help="Its .pub file.")],
    tenant: TenantOpt, api_url: ApiUrl,
    role: Annotated[list[str], typer.Option("--role", help="A role (repeatable).")],
    not_after: Annotated[datetime | None, typer.Option(
        help="When the key stops being valid (RFC 3339, UTC).")] = None,
    key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR, admin_tenant: AdminTenantOpt = "*",
    reason: ReasonOpt = "", wait: WaitOpt = 10.0, as_json: JsonFlag = False,
) -> None:
    """Register a principal's key, live (PrincipalRegistered; needs the quorum if one is
    configured). In force for every request decided after the answer.

    Example: govledger principal register agent:billing --tenant acme --public-key
    billing.pub --role requester --api http://127.0.0.1:8080
    """
    if not_after is not None and not_after.tzinfo is None:
        raise ConfigError("--not-after needs an explicit UTC offset")
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.register(
        identity, load_public_key(public_key), tuple(role), tenant=tenant,
        not_after=not_after, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def principal_revoke(
    public_key: Annotated[Path, typer.Option("--public-key", help="The key's .pub file.")],
    tenant: TenantOpt, api_url: ApiUrl, key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR,
    admin_tenant: AdminTenantOpt = "*", reason: ReasonOpt = "", wait: WaitOpt = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key at once (PrincipalRevoked). Refused for the last operator admin and for
    the authority key the processor signs with (rotate it first)."""
    from ledger.core.keys import key_id
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.revoke(
        key_id(load_public_key(public_key)), tenant=tenant, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def principal_suspend(
    identity: Annotated[str, typer.Argument(help="The principal's identity.")],
    tenant: TenantOpt, api_url: ApiUrl, key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR,
    admin_tenant: AdminTenantOpt = "*", reason: ReasonOpt = "", wait: WaitOpt = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Kill switch for one principal: its requests are denied and every artifact it
    initiated or holds, and every artifact below those, is refused at the gate."""
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.suspend(identity, tenant=tenant, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def principal_resume(
    identity: Annotated[str, typer.Argument(help="The principal's identity.")],
    tenant: TenantOpt, api_url: ApiUrl, key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR,
    admin_tenant: AdminTenantOpt = "*", reason: ReasonOpt = "", wait: WaitOpt = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Lift a principal's suspension."""
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.resume(identity, tenant=tenant, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def tenant_suspend(
    tenant: Annotated[str, typer.Argument(help="The tenant.")], api_url: ApiUrl,
    key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR, admin_tenant: AdminTenantOpt = "*",
    reason: ReasonOpt = "", wait: WaitOpt = 10.0, as_json: JsonFlag = False,
) -> None:
    """Kill switch for a whole tenant: every request denied (TENANT_SUSPENDED), every
    outstanding artifact refused at the gate, from the answer on.

    Example: govledger tenant suspend acme --reason "incident 42" --api http://127.0.0.1:8080
    """
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.suspend_tenant(tenant, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def tenant_resume(
    tenant: Annotated[str, typer.Argument(help="The tenant.")], api_url: ApiUrl,
    key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR, admin_tenant: AdminTenantOpt = "*",
    reason: ReasonOpt = "", wait: WaitOpt = 10.0, as_json: JsonFlag = False,
) -> None:
    """Lift a tenant's suspension."""
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.resume_tenant(tenant, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def policy_publish(
    directory: Annotated[Path, typer.Argument(help="The policy directory (*.cedar, schema).")],
    version: Annotated[str, typer.Option("--version", help="A version label.")],
    api_url: ApiUrl,
    shadow: Annotated[bool, typer.Option(
        "--shadow", help="Evaluate beside the enforced policy until promoted.")] = False,
    key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR, reason: ReasonOpt = "",
    wait: WaitOpt = 10.0, as_json: JsonFlag = False,
) -> None:
    """Publish a Cedar policy set, live (validated here and again by the processor; an
    invalid one is refused and the old one stays). Operator admins only.

    Example: govledger policy publish ./policies --version 2026-12-06 --api http://...
    """
    from ledger.server.governance_tools import policy_payload
    files, digest = policy_payload(directory)
    signing = _admin(key, admin, "*")
    envelope = signing.publish_policy(files, digest, version, shadow=shadow,
                                                      reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def policy_promote(
    digest: Annotated[str, typer.Argument(help="The shadow policy's digest (sha256:...).")],
    api_url: ApiUrl, key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR,
    reason: ReasonOpt = "", wait: WaitOpt = 10.0, as_json: JsonFlag = False,
) -> None:
    """Make the shadow policy the enforced one."""
    signing = _admin(key, admin, "*")
    envelope = signing.promote_policy(digest, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def governance_approve(
    event_id: Annotated[str, typer.Argument(help="The pending governance event's id.")],
    api_url: ApiUrl, key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR,
    admin_tenant: AdminTenantOpt = "*", reason: ReasonOpt = "", wait: WaitOpt = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Approve a pending governance event (the two-person rule). Prints the event's answer
    when this approval completes its quorum (exit 0), else PENDING (exit 4)."""
    signing = _admin(key, admin, admin_tenant)
    envelope = signing.approve(event_id, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def governance_configure(
    quorum: Annotated[int, typer.Option(help="Admin signatures a policy, a registration or "
                                        "a rule change needs (1-16).")],
    api_url: ApiUrl,
    window_s: Annotated[int, typer.Option(help="Seconds the approvals may take.")] = 3600,
    key: KeyOpt = DEFAULT_KEY, admin: AsOpt = OPERATOR, reason: ReasonOpt = "",
    wait: WaitOpt = 10.0, as_json: JsonFlag = False,
) -> None:
    """Set the quorum (GovernanceConfigured). Operator admins only."""
    signing = _admin(key, admin, "*")
    envelope = signing.configure(quorum, window_s, reason=reason)
    _send(signing, envelope, api_url, wait, as_json)


def governance_state(
    data: DataOpt = None,
    at: Annotated[int | None, typer.Option(
        "--at", help="Leaf index: the state in force after it (default: the last).")] = None,
    evidence_file: Annotated[Path | None, typer.Option(
        "--evidence", help="Write the inclusion bundles of the events used here (JSON).")]
        = None,
    as_json: JsonFlag = False,
) -> None:
    """Which principals, roles, suspensions and policy were in force at a leaf, from the
    ledger alone (offline; trust anchors: keys/operator.pub and keys/authority.pub).

    Example: govledger governance state --data ./data --at 120 --evidence used.json
    """
    from ledger.server.governance_tools import evidence, state_at
    settings = settings_from(data)
    found = state_at(settings.data_dir, at)
    summary = dict(found.summary())
    if evidence_file is not None:
        bundles = evidence(settings.data_dir, found)
        evidence_file.write_text(json.dumps(bundles, indent=1) + "\n")
        summary["evidence"] = str(evidence_file)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True, indent=1))
        return
    policy = summary["policy"]
    typer.echo(f"at leaf {found.index}: governance position {found.state.position}; policy "
               f"{policy['digest'] if isinstance(policy, dict) else 'none'}; quorum "
               f"{found.state.quorum}")
    for entry in found.summary()["principals"]:  # type: ignore[attr-defined]
        revoked = f" revoked {entry['revoked_at']}" if entry["revoked_at"] else ""
        typer.echo(f"  {entry['tenant']}/{entry['identity']} {','.join(entry['roles'])}"
                   f"{revoked}")
    for name in ("suspended_tenants", "suspended_principals"):
        if summary[name]:
            typer.echo(f"  {name.replace('_', ' ')}: {', '.join(summary[name])}")  # type: ignore[arg-type]
