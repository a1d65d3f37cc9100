"""``govledger policy ...``: check, test and explain Cedar policy bundles offline, on the
processor's own entity model and decision rule (Cedar's CLI cannot build govledger's
principal, resource and context entities).

- ``validate DIR``: load the bundle as the processor does; list every problem (exit 1).
- ``test DIR CASES``: run a cases file through the processor's rule (exit 1 on a mismatch).
- ``explain REQUEST``: the verdict on one request, its determining policies and reason.
- ``shadow-report``: how often the shadow policy agreed with the enforced one, per policy
  id, from the ledger's decisions.

The commands run through ledger/server/policy_tools.py (the CLI may not import processors,
tests/unit/test_layout.py). Exit codes: 0 ok / allowed, 1 problems / mismatch / denied,
2 bad input (``main()`` turns ConfigError into 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.cli.options import EXIT_INVALID, DataOpt, JsonFlag, emit, settings_from
from ledger.datadir import DataDir
from ledger.errors import ConfigError

if TYPE_CHECKING:  # the tools load Cedar and the decision rules: only when a command runs
    from ledger.server.policy_tools import (
        BundleReport,
        CaseResult,
        Explanation,
        PolicyInput,
        Verdict,
    )

# What the offline tools leave out: they need the processor's state or its clock.
NOT_CHECKED = ("key validity window", "replay", "holder", "time window", "lineage",
               "rate limit")

PolicyDir = Annotated[Path, typer.Argument(
    help="Policy bundle directory: *.cedar files and one schema.cedarschema(.json).")]


def _validate_text(report: BundleReport) -> str:
    if report.problems:
        lines = [str(p) for p in report.problems]
        lines.append(f"{len(report.problems)} problem(s): the processor refuses this bundle")
        return "\n".join(lines)
    schema = [f for f in report.files if not f.endswith(".cedar")]
    return "\n".join([
        f"bundle:   {report.directory}",
        f"files:    {', '.join(report.files)}",
        f"checked:  {len(report.policy_ids)} policies parsed, named and validated against "
        f"{schema[0] if schema else 'the schema'}",
        *(f"  {policy_id}" for policy_id in report.policy_ids),
        f"digest:   {report.digest}",
        "ok",
    ])


def policy_validate(directory: PolicyDir, as_json: JsonFlag = False) -> None:
    """Check a policy bundle exactly as the processor loads it.

    Parses the schema, validates every policy against it with Cedar's strict validator, and
    applies the bundle rules (@id on every policy, no duplicates, no templates, limits).
    Prints the files, policy ids and digest it checked and exits 0, or prints every problem
    with its file and policy id and exits 1.

    Example: govledger policy validate ./govledger-data/policies
    """
    from ledger.server.policy_tools import validate_bundle
    report = validate_bundle(directory)
    data: dict[str, object] = {
        "ok": not report.problems, "directory": str(report.directory),
        "files": list(report.files), "policy_ids": list(report.policy_ids),
        "digest": report.digest or None,
        "problems": [{"file": p.file, "policy": p.policy, "message": p.message}
                     for p in report.problems]}
    emit(data, as_json, _validate_text(report))
    if report.problems:
        raise typer.Exit(EXIT_INVALID)


def _outcome(verdict: Verdict) -> str:
    if verdict.allow:
        return "allow"
    return "deny " + ",".join(r.value for r in verdict.reasons)


def _verdict_json(verdict: Verdict) -> dict[str, object]:
    return {"outcome": "allow" if verdict.allow else "deny",
            "reasons": [r.value for r in verdict.reasons],
            "policies": list(verdict.policy_ids), "detail": verdict.detail}


def _case_line(result: CaseResult) -> str:
    verdict = result.verdict
    got = _outcome(verdict) + (f" [{', '.join(verdict.policy_ids)}]" if verdict.policy_ids
                               else "")
    if result.passed:
        return f"PASS  {result.case.name}: {got}"
    detail = f" ({verdict.detail})" if verdict.detail else ""
    return f"FAIL  {result.case.name}: {'; '.join(result.mismatches)}; got {got}{detail}"


def policy_test(
    directory: PolicyDir,
    cases: Annotated[Path, typer.Argument(
        help="Cases file, .toml or .json (format: docs/policy.md, 'Policy tests').")],
    as_json: JsonFlag = False,
) -> None:
    """Run policy test cases through the processor's own decision rule.

    Each case is a request (principal, tenant, roles, actions, resource, context ...) with
    the expected outcome, reason and determining policies (docs/policy.md, "Policy tests").
    Prints one line per case and a summary; exits 1 if any case does not get what it
    expects, 2 for a bad cases file or bundle.

    Example: govledger policy test ./policies ./policies/cases.toml
    """
    from ledger.server.policy_tools import run_case_file
    results = run_case_file(directory, cases)
    failed = sum(not r.passed for r in results)
    summary = f"{len(results)} cases: {len(results) - failed} passed, {failed} failed"
    data: dict[str, object] = {
        "passed": len(results) - failed, "failed": failed,
        "cases": [{"name": r.case.name, "passed": r.passed, "mismatches": list(r.mismatches),
                   **_verdict_json(r.verdict)} for r in results]}
    emit(data, as_json, "\n".join([*(_case_line(r) for r in results), summary]))
    if failed:
        raise typer.Exit(EXIT_INVALID)


def _request_json(given: PolicyInput | None) -> dict[str, object] | None:
    if given is None:
        return None
    request = given.request
    return {"principal": request.signer, "tenant": request.tenant,
            "roles": sorted(given.roles), "actions": list(request.scope.actions),
            "resource": request.scope.resource, "depth": given.depth,
            "single_use": request.single_use, "context": dict(request.context)}


def _explain_text(found: Explanation, digest: str) -> str:
    verdict = found.verdict
    lines = [f"outcome:    {'allow' if verdict.allow else 'deny'}"]
    if not verdict.allow:
        lines.append(f"reason:     {', '.join(r.value for r in verdict.reasons)}")
    if verdict.detail:
        lines.append(f"detail:     {verdict.detail}")
    lines.append(f"policies:   {', '.join(verdict.policy_ids) or '(none)'}")
    if (given := found.given) is not None:
        req = given.request
        lines.append(f"request:    {req.signer} (tenant {req.tenant}, roles "
                     f"{', '.join(sorted(given.roles)) or '(none)'}) "
                     f"{', '.join(req.scope.actions)} on {req.scope.resource}, "
                     f"depth {given.depth}")
    lines += [f"signature:  {found.signature}", f"bundle:     {digest}",
              f"not judged: {', '.join(NOT_CHECKED)} (they need the processor's state or "
              "clock)"]
    return "\n".join(lines)


def policy_explain(
    request: Annotated[Path, typer.Argument(
        help="A signed AuthorizationRequested envelope, its unsigned JSON payload, or a "
        "request in the cases-file form (JSON).")],
    policies: Annotated[Path | None, typer.Option(
        "--policies", help="Policy bundle directory (default: the data directory's "
        "policies/).")] = None,
    keyring: Annotated[Path | None, typer.Option(
        "--keyring", help="Keyring: verifies a signed request and gives the signer's "
        "roles.")] = None,
    roles: Annotated[list[str] | None, typer.Option(
        "--roles", help="The principal's roles, comma-separated or repeated (instead of "
        "--keyring).")] = None,
    depth: Annotated[int | None, typer.Option(
        "--depth", min=0, help="Lineage depth (needed for a child request; default 0).")] = None,
    data: DataOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Explain one request offline: outcome, determining policies, reason.

    Decided by the processor's own rule (requester role, resource pattern, Cedar policy);
    the checks that need its state or clock are listed as not judged. Exits 0 if allowed,
    1 if denied, 2 for bad input.

    Example: govledger policy explain request.json --policies ./policies --roles requester,reader
    """
    directory = policies if policies is not None else DataDir(settings_from(data).data_dir).policies
    role_set = (frozenset(r.strip() for item in roles for r in item.split(",") if r.strip())
                if roles else None)
    from ledger.server.policy_tools import explain_request
    found, digest = explain_request(request, directory, keyring_path=keyring, roles=role_set,
                                    depth=depth)
    result: dict[str, object] = {**_verdict_json(found.verdict), "signature": found.signature,
                                 "event_id": found.event_id, "bundle_digest": digest,
                                 "request": _request_json(found.given),
                                 "not_judged": list(NOT_CHECKED)}
    emit(result, as_json, _explain_text(found, digest))
    if not found.verdict.allow:
        raise typer.Exit(EXIT_INVALID)


def policy_shadow_report(
    data: DataOpt = None,
    since: Annotated[int, typer.Option(
        "--since", min=0, help="First leaf index to read (default: the whole ledger).")] = 0,
    fail_on_disagreement: Annotated[bool, typer.Option(
        "--fail-on-disagreement", help="Exit 1 if any decision's shadow outcome differs "
        "(a gate before `policy promote`).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Shadow policy against the enforced one: agreements and disagreements per policy id.

    Reads the grants and denials in DATA/ledger.db (offline) that carry a shadow outcome:
    those decided while a policy published with --shadow was in force. A decision counts
    under every policy id that determined it or the shadow's outcome; (default) is Cedar's
    default deny. The same counts are live on /metrics (govledger_shadow_decisions_total).

    Example: govledger policy shadow-report --data ./data --fail-on-disagreement
    """
    from rich.progress import Progress

    from ledger.log.ledger_dir import DB_NAME
    from ledger.log.reports import shadow_report
    from ledger.log.store import LedgerStore
    path = settings_from(data).data_dir / DB_NAME
    if not path.exists():
        raise ConfigError(f"no ledger at {path}")
    with LedgerStore(path) as store:
        size = store.tree_size()
        with Progress(transient=True, disable=as_json or size - since < 100_000) as progress:
            task = progress.add_task("reading decisions", total=size - since)
            tally = shadow_report(store, since, lambda index: progress.update(
                task, completed=index - since))
    summary = tally.summary()
    lines = [f"no decision with a shadow outcome in leaves {since}..{size - 1}"]
    if tally.totals:
        lines = [f"{'shadow policy':<20} {'policy id':<40} {'agree':>8} {'disagree':>8}"]
        for digest, policy_id, counts in tally.rows():
            lines.append(f"{digest[:20]:<20} {policy_id:<40} {counts.agree:>8} "
                         f"{counts.disagree:>8}")
        for digest, total in sorted(tally.totals.items()):
            lines.append(f"{digest}: {total.agree} agree, {total.disagree} disagree")
    emit(dict(summary), as_json, "\n".join(lines))
    if fail_on_disagreement and any(t.disagree for t in tally.totals.values()):
        raise typer.Exit(EXIT_INVALID)
