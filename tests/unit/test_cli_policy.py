"""``govledger policy validate|test|explain`` (ledger/cli/policy_commands.py): output, exit
codes (0 ok, 1 problems / mismatch / denied, 2 bad input through ``main()``)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli import app, main
from ledger.core.envelope import sign_event
from ledger.core.keys import Principal, principal_document
from ledger.keyfiles import write_atomic
from tests.factories import request, seeded_signer

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
CASES = EXAMPLES / "cases.toml"
READ_CASE = {"name": "reporter reads orders", "principal": "agent:reporter", "tenant": "acme",
             "roles": ["requester", "reader"], "action": "read", "resource": "db/orders/*"}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             *args: str) -> tuple[int, str]:
    """Through the console entry point, where ConfigError becomes exit 2."""
    monkeypatch.setattr(sys, "argv", ["govledger", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out + captured.err


def copy_examples(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLES, target)
    return target


# --- validate -----------------------------------------------------------------------------

def test_validate_prints_what_it_checked() -> None:
    code, out = run("policy", "validate", str(EXAMPLES))
    assert code == 0
    assert "12 policies parsed, named and validated against schema.cedarschema" in out
    assert "  forbid-prod-secrets\n" in out and "digest:   sha256:" in out
    code, out = run("policy", "validate", str(EXAMPLES), "--json")
    doc = json.loads(out)
    assert doc["ok"] and len(doc["policy_ids"]) == 12 and doc["problems"] == []


def test_validate_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    policies = copy_examples(tmp_path)
    (policies / "data.cedar").write_text(
        (policies / "data.cedar").read_text().replace("context.depth", "context.hops"))
    (policies / "extra.cedar").write_text("permit (principal, action, resource);\n")
    code, out = run("policy", "validate", str(policies))
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith("data.cedar [db-write-orders]: fails schema validation")
               for line in lines)
    assert any(line.startswith("extra.cedar [policy0]: needs an @id") for line in lines)
    assert lines[-1].endswith("problem(s): the processor refuses this bundle")
    code, out = run("policy", "validate", str(policies), "--json")
    problems = json.loads(out)["problems"]
    assert code == 1 and {(p["file"], p["policy"]) for p in problems} == {
        ("data.cedar", "db-write-orders"), ("extra.cedar", "policy0")}


def test_validate_of_a_missing_directory_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(monkeypatch, capsys, "policy", "validate", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in out


# --- test ---------------------------------------------------------------------------------

def test_the_shipped_examples_pass_their_cases() -> None:
    code, out = run("policy", "test", str(EXAMPLES), str(CASES))
    assert code == 0, out
    assert out.splitlines()[-1] == "21 cases: 21 passed, 0 failed"
    assert all(line.startswith("PASS  ") for line in out.splitlines()[:-1])


def test_a_wrong_expectation_exits_1_and_says_which(tmp_path: Path) -> None:
    wrong = tmp_path / "cases.json"
    wrong.write_text(json.dumps({"cases": [
        {**READ_CASE, "expect": "allow"},
        {**READ_CASE, "name": "wrongly expects a denial", "expect": "deny",
         "reason": "POLICY_DENY"}]}))
    code, out = run("policy", "test", str(EXAMPLES), str(wrong))
    assert code == 1
    assert out.splitlines() == [
        "PASS  reporter reads orders: allow [db-read]",
        "FAIL  wrongly expects a denial: expected deny, got allow; got allow [db-read]",
        "2 cases: 1 passed, 1 failed"]
    code, out = run("policy", "test", str(EXAMPLES), str(wrong), "--json")
    doc = json.loads(out)
    assert code == 1 and (doc["passed"], doc["failed"]) == (1, 1)
    assert doc["cases"][1]["mismatches"] == ["expected deny, got allow"]


def test_a_policy_change_breaks_the_shipped_cases(tmp_path: Path) -> None:
    policies = copy_examples(tmp_path)
    guardrails = policies / "guardrails.cedar"
    guardrails.write_text(guardrails.read_text().replace("context.depth > 3",
                                                         "context.depth > 5"))
    code, out = run("policy", "test", str(policies), str(policies / "cases.toml"))
    assert code == 1
    assert "FAIL  delegation deeper than three hops needs a human: expected deny" in out


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("cases.toml", "[[cases]\n", "does not parse"),
    ("cases.json", "{", "does not parse"),
    ("cases.yaml", "cases: []", "ends in .toml or .json"),
    ("cases.json", "[]", "a cases document is a table"),
    ("cases.json", json.dumps({"cases": [{**READ_CASE, "expect": "deny"}]}),
     "case 1 (reporter reads orders): a \"deny\" case needs reason"),
])
def test_a_bad_cases_file_exits_2_with_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, text: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    code, out = run_main(monkeypatch, capsys, "policy", "test", str(EXAMPLES), str(path))
    assert code == 2
    assert out.startswith(f"govledger: {path}") and needle in out


def test_a_missing_cases_file_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(monkeypatch, capsys, "policy", "test", str(EXAMPLES),
                         str(tmp_path / "none.toml"))
    assert code == 2 and "cannot read cases file" in out


# --- explain ------------------------------------------------------------------------------

def test_explain_a_case_form_request_with_roles(tmp_path: Path) -> None:
    doc = tmp_path / "request.json"
    doc.write_text(json.dumps({**{k: v for k, v in READ_CASE.items() if k != "name"},
                               "resource": "prod/secrets/x"}))
    code, out = run("policy", "explain", str(doc), "--policies", str(EXAMPLES))
    assert code == 1
    assert "outcome:    deny" in out and "reason:     POLICY_DENY" in out
    assert "policies:   forbid-prod-secrets" in out and "signature:  unsigned" in out
    code, out = run("policy", "explain", str(doc), "--policies", str(EXAMPLES), "--json",
                    "--roles", "requester,deployer")
    result = json.loads(out)
    assert result["outcome"] == "deny" and result["policies"] == ["forbid-prod-secrets"]
    assert result["request"]["roles"] == ["deployer", "requester"]


def test_explain_a_signed_request_with_the_keyring(tmp_path: Path) -> None:
    signer = seeded_signer("reporter")
    keyring = tmp_path / "keyring.json"
    principal = Principal("agent:reporter", "acme", signer.public_key,
                          frozenset({"requester", "reader"}))
    write_atomic(keyring, json.dumps({"version": 1,
                                      "principals": [principal_document(principal)]}).encode())
    envelope = tmp_path / "request.dsse.json"
    envelope.write_bytes(sign_event(request(signer="agent:reporter", resource="db/orders/*"),
                                    signer) + b"\n")
    code, out = run("policy", "explain", str(envelope), "--policies", str(EXAMPLES),
                    "--keyring", str(keyring), "--json")
    result = json.loads(out)
    assert code == 0 and result["outcome"] == "allow" and result["signature"] == "verified"
    assert result["policies"] == ["db-read"] and len(result["event_id"]) == 64


def test_explain_defaults_to_the_data_directorys_policies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "data" / "policies")
    doc = tmp_path / "request.json"
    doc.write_text(json.dumps({k: v for k, v in READ_CASE.items() if k != "name"}))
    monkeypatch.delenv("GOVLEDGER_DATA_DIR", raising=False)
    code, out = run("policy", "explain", str(doc), "--data", str(tmp_path / "data"))
    assert code == 0 and "policies:   db-read" in out


def test_explain_without_roles_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "request.json"
    payload.write_text(request(signer="agent:reporter").model_dump_json())
    code, out = run_main(monkeypatch, capsys, "policy", "explain", str(payload),
                         "--policies", str(EXAMPLES))
    assert code == 2 and "pass --roles or --keyring" in out
