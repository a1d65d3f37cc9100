"""Cedar policy bundles: load-time validation, fail-closed evaluation, digest, entity model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import cedarpy
import pytest

from ledger.errors import ConfigError
from processors.policy import PolicyBundle, PolicyDecision, bundle_digest
from processors.policy_rules import BundleInvalid

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
SCHEMA = (EXAMPLES / "schema.cedarschema").read_text(encoding="utf-8")
ENV = "sha256:" + "e" * 64
PERMIT_ALL = '@id("permit-all")\npermit (principal, action, resource);\n'


def context(roles: tuple[str, ...] = ("payments", "requester"), depth: int = 0,
            single_use: bool = True, **meta: object) -> dict[str, object]:
    return {"tenant": "acme", "environments": [ENV], "depth": depth, "roles": list(roles),
            "single_use": single_use, "meta": meta}


def bundle(tmp_path: Path, policies: Mapping[str, str], schema: str = SCHEMA,
           schema_name: str = "schema.cedarschema") -> PolicyBundle:
    for name, text in policies.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / schema_name).write_text(schema, encoding="utf-8")
    return PolicyBundle.load(tmp_path)


@pytest.fixture(scope="module")
def example() -> PolicyBundle:
    return PolicyBundle.load(EXAMPLES)


# --- the example bundle -------------------------------------------------------------------

def test_example_bundle_loads_with_its_ids(example: PolicyBundle) -> None:
    assert "payments-transfer-under-limit" in example.policy_ids
    assert "forbid-prod-secrets" in example.policy_ids
    assert list(example.policy_ids) == sorted(set(example.policy_ids))
    assert set(example.files()) == {p.name for p in EXAMPLES.iterdir()
                                    if p.suffix == ".cedar" or p.name == "schema.cedarschema"}
    assert example.digest == bundle_digest(example.files())
    assert example.digest.startswith("sha256:") and len(example.digest) == 7 + 64


def test_permit(example: PolicyBundle) -> None:
    decision = example.evaluate("agent:pay-bot", "transfer", "payments/acme/invoices/*",
                                context(amount=500, currency="EUR"))
    assert decision == PolicyDecision(True, ("payments-transfer-under-limit",), ())


def test_permit_condition_not_met_is_no_permit(example: PolicyBundle) -> None:
    over = example.evaluate("agent:pay-bot", "transfer", "payments/acme",
                            context(amount=10001, currency="EUR"))
    assert over == PolicyDecision(False, (), ())
    reusable = example.evaluate("agent:pay-bot", "transfer", "payments/acme",
                                context(single_use=False, amount=5, currency="EUR"))
    assert not reusable.allow


def test_no_permit_is_deny(example: PolicyBundle) -> None:
    decision = example.evaluate("agent:pay-bot", "read", "hr/salaries", context())
    assert decision == PolicyDecision(False, (), ())


def test_forbid_overrides_permit(example: PolicyBundle) -> None:
    decision = example.evaluate("agent:pay-bot", "transfer", "payments/acme",
                                context(amount=5, currency="EUR", risk="high"))
    assert decision == PolicyDecision(False, ("forbid-high-risk-transfer",), ())


def test_resource_hierarchy_is_scope_containment(example: PolicyBundle) -> None:
    reader = context(roles=("reader",))
    for inside in ("db", "db/*", "db/orders", "db/orders/*", "db/%6frders/1"):
        assert example.evaluate("agent:r", "read", inside, reader).allow, inside
    for outside in ("dbx", "dbx/*", "*", "data/db"):
        assert not example.evaluate("agent:r", "read", outside, reader).allow, outside


def test_wider_pattern_than_a_forbidden_subtree_is_denied(tmp_path: Path) -> None:
    guard = (EXAMPLES / "guardrails.cedar").read_text(encoding="utf-8")
    policies = bundle(tmp_path, {"all.cedar": PERMIT_ALL, "guardrails.cedar": guard})
    ctx = context()
    assert policies.evaluate("agent:x", "read", "prod/services/api", ctx).allow
    for pattern in ("prod/secrets/db-password", "prod/secrets/*", "prod/*", "*"):
        decision = policies.evaluate("agent:x", "read", pattern, ctx)
        assert not decision.allow and decision.determining, pattern
    deleted = policies.evaluate("agent:x", "delete", "prod/services/api", ctx)
    assert deleted.determining == ("forbid-delete-in-prod",)


def test_determining_ids_are_all_reported(tmp_path: Path) -> None:
    policies = bundle(tmp_path, {"p.cedar": PERMIT_ALL + (
        '@id("permit-read")\npermit (principal, action == Action::"read", resource);\n')})
    decision = policies.evaluate("agent:x", "read", "db/x", context())
    assert decision == PolicyDecision(True, ("permit-all", "permit-read"), ())


def test_evaluate_actions_decides_each_action(example: PolicyBundle) -> None:
    decisions = example.evaluate_actions("agent:pay-bot", ("transfer", "read", "delete"),
                                         "payments/acme", context(amount=5, currency="USD"))
    assert [d.allow for d in decisions] == [True, True, False]
    assert decisions[1].determining == ("payments-read",)
    assert example.evaluate_actions("agent:pay-bot", (), "payments/acme", context()) == ()


def test_principal_attrs_override_the_context(example: PolicyBundle) -> None:
    ctx = context(roles=("reader",))
    denied = example.evaluate("agent:r", "read", "db/x", ctx,
                              principal_attrs={"tenant": "acme", "roles": ["writer"]})
    assert example.evaluate("agent:r", "read", "db/x", ctx).allow and not denied.allow


# --- fail closed: errors are denials ------------------------------------------------------

OVERFLOW_FORBID = ('@id("forbid-overflowing")\nforbid (principal, action, resource)\n'
                   "when { context.meta has amount && "
                   "context.meta.amount * 1000000000000 > 5 };\n")
OVERFLOW_PERMIT = ('@id("permit-overflowing")\npermit (principal, action, resource)\n'
                   "when { context.meta has amount && "
                   "context.meta.amount * 1000000000000 > 5 };\n")


def test_erroring_forbid_denies_although_cedar_would_allow(tmp_path: Path) -> None:
    policies = bundle(tmp_path, {"p.cedar": PERMIT_ALL + OVERFLOW_FORBID})
    ctx = context(amount=10**8)                  # 10^8 * 10^12 overflows Cedar's i64
    raw = cedarpy.is_authorized(
        {"principal": {"type": "Agent", "id": "agent:x"},
         "action": {"type": "Action", "id": "read"},
         "resource": {"type": "Resource", "id": "db/x"}, "context": ctx},
        (tmp_path / "p.cedar").read_text(encoding="utf-8"),
        [{"uid": {"type": "Agent", "id": "agent:x"},
          "attrs": {"tenant": "acme", "roles": []}, "parents": []}])
    assert raw.allowed and raw.diagnostics.errors      # Cedar skips the erroring forbid
    decision = policies.evaluate("agent:x", "read", "db/x", ctx)
    assert not decision.allow
    assert decision.determining == ("permit-all",)
    assert any("forbid-overflowing" in e and "overflow" in e for e in decision.errors)
    assert policies.evaluate("agent:x", "read", "db/x", context(amount=1)) == PolicyDecision(
        False, ("forbid-overflowing",), ())
    assert policies.evaluate("agent:x", "read", "db/x", context()).allow


def test_erroring_permit_denies_even_with_another_permit(tmp_path: Path) -> None:
    policies = bundle(tmp_path, {"p.cedar": PERMIT_ALL + OVERFLOW_PERMIT})
    decision = policies.evaluate("agent:x", "read", "db/x", context(amount=10**8))
    assert not decision.allow and decision.errors
    assert policies.evaluate("agent:x", "read", "db/x", context(amount=1)).allow


def test_addition_overflow_in_a_forbid_denies(tmp_path: Path) -> None:
    policies = bundle(tmp_path, {"p.cedar": PERMIT_ALL + (
        '@id("forbid-deep")\nforbid (principal, action, resource)\n'
        "when { context.depth + 9223372036854775000 > 9223372036854775400 };\n")})
    assert policies.evaluate("agent:x", "read", "db/x", context(depth=1)).allow
    assert policies.evaluate("agent:x", "read", "db/x", context(depth=500)).determining == (
        "forbid-deep",)
    overflow = policies.evaluate("agent:x", "read", "db/x", context(depth=10**6))
    assert not overflow.allow and any("overflow" in e for e in overflow.errors)


@pytest.mark.parametrize("ctx", [
    {**context(), "meta": {"undeclared": 1}},              # not in the schema
    {**context(), "meta": {"amount": "5"}},                # wrong type
    {**context(), "depth": True},
    {**context(), "extra": 1},
    {k: v for k, v in context().items() if k != "depth"},  # missing attribute
    {**context(), "meta": {"amount": 2**63}},              # beyond Cedar's Long
    {**context(), "meta": {"ticket": object()}},           # not JSON
    {**context(), "meta": {"__entity": {"type": "Agent", "id": "root"}}},
    {k: v for k, v in context().items() if k != "tenant"}, # principal attrs need it
])
def test_request_outside_the_schema_or_unconvertible_denies(example: PolicyBundle,
                                                            ctx: dict[str, object]) -> None:
    decision = example.evaluate("agent:x", "read", "db/x", {**ctx, "roles": ["reader"]}
                                if "roles" in ctx else ctx)
    assert not decision.allow and decision.errors


@pytest.mark.parametrize("resource", ["db/../hr", "db/%2e%2e/hr", "db//x", "db/%2fx", ""])
def test_invalid_resource_denies(example: PolicyBundle, resource: str) -> None:
    decision = example.evaluate("agent:x", "read", resource, context(roles=("reader",)))
    assert not decision.allow and decision.errors


def test_unknown_action_denies(example: PolicyBundle) -> None:
    decision = example.evaluate("agent:x", "fly", "db/x", context(roles=("reader",)))
    assert not decision.allow and decision.errors


# --- load-time validation -----------------------------------------------------------------

@pytest.mark.parametrize(("policies", "needle"), [
    ({"p.cedar": '@id("x")\npermit (principal, action, resource) when { 1 > };'},
     "does not parse"),
    ({"p.cedar": '@id("x")\npermit (principal, action, resource) when { context.nope };'},
     "p.cedar [x]: fails schema validation"),
    ({"p.cedar": '@id("x")\npermit (principal, action == Action::"fly", resource);'},
     "fails schema validation"),
    ({"p.cedar": '@id("x")\npermit (principal, action, resource) '
                 'when { context.meta.amount > 1 };'},   # optional attribute without `has`
     "fails schema validation"),
    ({"p.cedar": "permit (principal, action, resource);"}, "needs an @id"),
    ({"p.cedar": '@id("bad id!")\npermit (principal, action, resource);'}, "needs an @id"),
    ({"p.cedar": '@id("")\npermit (principal, action, resource);'}, "needs an @id"),
    ({"p.cedar": PERMIT_ALL + PERMIT_ALL}, "duplicate policy id 'permit-all'"),
    ({"a.cedar": PERMIT_ALL, "b.cedar": PERMIT_ALL}, "duplicate policy id 'permit-all'"),
    ({"p.cedar": "// nothing here\n"}, "no policies"),
    ({}, "no policies"),
    ({"p.cedar": '@id("t")\npermit (principal == ?principal, action, resource);'},
     "templates"),
])
def test_invalid_bundle_refuses_to_load(tmp_path: Path, policies: dict[str, str],
                                        needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        bundle(tmp_path, policies)
    assert needle in str(info.value)


def test_every_problem_is_listed_with_its_file_and_policy_id(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid) as info:
        bundle(tmp_path, {
            "a.cedar": PERMIT_ALL + '@id("bad-ctx")\npermit (principal, action, resource) '
                       "when { context.nope };\n",
            "b.cedar": "permit (principal, action, resource);\n" + PERMIT_ALL,
            "c.cedar": "permit (",
        })
    found = {(p.file, p.policy, p.message.split(":")[0]) for p in info.value.problems}
    assert found == {("a.cedar", "bad-ctx", "fails schema validation"),
                     ("b.cedar", "policy0", 'needs an @id("...") matching '
                      "^[A-Za-z0-9][A-Za-z0-9._"),
                     ("b.cedar", "permit-all", "duplicate policy id 'permit-all'"),
                     ("c.cedar", "", "does not parse")}
    more = len(info.value.problems) - 1
    assert str(info.value).startswith("policy bundle: ")
    assert str(info.value).endswith(f"(and {more} more problems)")
    assert all("policy0" not in p.message for p in info.value.problems
               if p.policy == "bad-ctx")  # Cedar's position is replaced by the @id


def test_a_bad_schema_still_reports_the_policies_problems(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid) as info:
        bundle(tmp_path, {"p.cedar": "permit (principal, action, resource);"},
               schema="entity Agent = {")
    assert [(p.file, p.policy) for p in info.value.problems] == [
        ("schema.cedarschema", ""), ("p.cedar", "policy0")]


def test_schema_problems_refuse_to_load(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(PERMIT_ALL, encoding="utf-8")
    with pytest.raises(ConfigError, match="need exactly one"):
        PolicyBundle.load(tmp_path)
    (tmp_path / "schema.cedarschema").write_text("entity Agent = {", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not parse"):
        PolicyBundle.load(tmp_path)
    (tmp_path / "schema.cedarschema").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "schema.cedarschema.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="need exactly one"):
        PolicyBundle.load(tmp_path)


def test_unreadable_or_odd_inputs_refuse_to_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        PolicyBundle.load(tmp_path / "missing")
    (tmp_path / "schema.cedarschema").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "p.cedar").write_bytes(b'@id("caf\xe9")\npermit (principal, action, resource);')
    with pytest.raises(ConfigError, match="cannot read"):
        PolicyBundle.load(tmp_path)
    for name in ("../p.cedar", "notes.txt", ".hidden.cedar", "x" * 130 + ".cedar"):
        with pytest.raises(ConfigError, match="unexpected file name"):
            PolicyBundle.from_files({"schema.cedarschema": SCHEMA, name: PERMIT_ALL})


def test_json_schema_is_accepted(tmp_path: Path) -> None:
    record = {"type": "Record", "attributes": {"path": {"type": "String"},
                                               "wildcard": {"type": "Boolean"}}}
    schema = {"": {"entityTypes": {"Agent": {},
                                   "Resource": {"memberOfTypes": ["Resource"], "shape": record}},
                   "actions": {"read": {"appliesTo": {"principalTypes": ["Agent"],
                                                      "resourceTypes": ["Resource"]}}}}}
    policies = bundle(tmp_path, {"p.cedar": PERMIT_ALL}, json.dumps(schema),
                      "schema.cedarschema.json")
    decision = policies.evaluate("agent:x", "read", "db/x", {}, principal_attrs={})
    assert decision == PolicyDecision(True, ("permit-all",), ())


# --- digest and files ---------------------------------------------------------------------

def test_digest_changes_when_any_file_changes(example: PolicyBundle) -> None:
    files = dict(example.files())
    seen = {example.digest}
    for name in files:
        changed = {**files, name: files[name] + " "}
        seen.add(PolicyBundle.from_files(changed).digest)
        renamed = {n if n != name else "z" + n: t for n, t in files.items()}
        if name.endswith(".cedar"):
            seen.add(PolicyBundle.from_files(renamed).digest)
    assert len(seen) == 1 + len(files) + sum(n.endswith(".cedar") for n in files)


def test_digest_is_over_exact_bytes_and_ignores_other_files(tmp_path: Path) -> None:
    first = bundle(tmp_path, {"p.cedar": PERMIT_ALL})
    (tmp_path / "README.md").write_text("not part of the bundle", encoding="utf-8")
    assert PolicyBundle.load(tmp_path).digest == first.digest
    (tmp_path / "p.cedar").write_bytes(PERMIT_ALL.replace("\n", "\r\n").encode())
    crlf = PolicyBundle.load(tmp_path)
    assert crlf.digest != first.digest and "\r\n" in crlf.files()["p.cedar"]


def test_digest_is_the_documented_encoding() -> None:
    import hashlib
    files = {"b.cedar": "B", "a.cedar": "é"}
    encoding = (b"govledger/policy-bundle/v1\n"
                + (7).to_bytes(8, "big") + b"a.cedar" + (2).to_bytes(8, "big") + "é".encode()
                + (7).to_bytes(8, "big") + b"b.cedar" + (1).to_bytes(8, "big") + b"B")
    assert bundle_digest(files) == "sha256:" + hashlib.sha256(encoding).hexdigest()
    assert bundle_digest(dict(reversed(list(files.items())))) == bundle_digest(files)


def test_files_round_trip_to_the_same_bundle(example: PolicyBundle) -> None:
    again = PolicyBundle.from_files(example.files())
    assert again.digest == example.digest and again.policy_ids == example.policy_ids
    ctx = context(amount=5, currency="GBP")
    assert again.evaluate("agent:p", "transfer", "payments/x", ctx) == example.evaluate(
        "agent:p", "transfer", "payments/x", ctx)
    with pytest.raises(TypeError):
        example.files()["p.cedar"] = "tampered"  # type: ignore[index]


def test_without_request_validation_errors_still_deny(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(PERMIT_ALL + OVERFLOW_FORBID, encoding="utf-8")
    (tmp_path / "schema.cedarschema").write_text(SCHEMA, encoding="utf-8")
    loose = PolicyBundle.load(tmp_path, validate_requests=False)
    strict = PolicyBundle.load(tmp_path)
    extra = {**context(), "meta": {"undeclared": 1}}
    assert loose.evaluate("agent:x", "read", "db/x", extra).allow
    assert not strict.evaluate("agent:x", "read", "db/x", extra).allow
    assert not loose.evaluate("agent:x", "read", "db/x", context(amount=10**8)).allow
    bad_principal = loose.evaluate("agent:x", "read", "db/x", context(),
                                   principal_attrs={"tenant": 7, "roles": []})
    assert not bad_principal.allow and bad_principal.errors
