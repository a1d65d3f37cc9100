"""Policy test cases and explain (processors/core/policy_cases.py, policy_explain.py): the
case format, matches and mismatches, bad documents, and agreement with the decision engine."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import parse_envelope, parse_payload, sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationGranted
from ledger.core.keys import KeyRing, Principal
from ledger.core.streams import Stream
from ledger.errors import ConfigError, Reason
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.policy_cases import PolicyCase, parse_cases, run_cases
from processors.core.policy_explain import explain
from processors.policy import PolicyBundle
from tests.factories import AUTHORITY, T0, request, seeded_signer

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
READ = {"principal": "agent:reporter", "tenant": "acme", "roles": ["requester", "reader"],
        "action": "read", "resource": "db/orders/*"}


@pytest.fixture(scope="module")
def example() -> PolicyBundle:
    return PolicyBundle.load(EXAMPLES)


def shipped_cases() -> tuple[PolicyCase, ...]:
    return parse_cases(tomllib.loads((EXAMPLES / "cases.toml").read_text(encoding="utf-8")))


def one(**case: object) -> tuple[PolicyCase, ...]:
    return parse_cases({"cases": [case]})


# --- running cases ------------------------------------------------------------------------

def test_every_shipped_case_passes(example: PolicyBundle) -> None:
    results = run_cases(example, shipped_cases())
    assert len(results) >= 20
    assert [r.mismatches for r in results if not r.passed] == []


def test_the_shipped_cases_cover_every_example_policy(example: PolicyBundle) -> None:
    named = {p for c in shipped_cases() for p in c.policies or ()}
    assert named == set(example.policy_ids)


def test_a_matching_allow_and_deny_pass(example: PolicyBundle) -> None:
    allow, deny = run_cases(example, parse_cases({"cases": [
        {**READ, "expect": "allow", "policies": ["db-read"]},
        {**READ, "resource": "prod/secrets/x", "expect": "deny", "reason": "POLICY_DENY",
         "policies": ["forbid-prod-secrets"]}]}))
    assert allow.passed and allow.verdict.allow and allow.verdict.policy_ids == ("db-read",)
    assert deny.passed and deny.verdict.reasons == (Reason.POLICY_DENY,)


@pytest.mark.parametrize(("expectation", "mismatch"), [
    ({"expect": "deny", "reason": "POLICY_DENY"}, "expected deny, got allow"),
    ({"expect": "allow", "policies": ["payments-read"]},
     "expected policies ['payments-read'], got ['db-read']"),
])
def test_a_wrong_expectation_is_a_mismatch(example: PolicyBundle, expectation: dict[str, object],
                                           mismatch: str) -> None:
    (result,) = run_cases(example, one(**READ, **expectation))
    assert not result.passed
    assert result.mismatches == (mismatch,)


def test_a_wrong_reason_is_a_mismatch(example: PolicyBundle) -> None:
    (result,) = run_cases(example, one(**{**READ, "resource": "db/../x"}, expect="deny",
                                       reason="POLICY_DENY"))
    assert result.mismatches == ("expected reason POLICY_DENY, got SCOPE_WIDENING",)


def test_defaults_apply_to_every_case_and_a_case_overrides_them(example: PolicyBundle) -> None:
    cases = parse_cases({"defaults": {"tenant": "acme", "roles": ["requester", "reader"]},
                         "cases": [{"principal": "agent:a", "action": "read",
                                    "resource": "db/x", "expect": "allow"},
                                   {"principal": "agent:a", "action": "read", "roles": [],
                                    "resource": "db/x", "expect": "deny",
                                    "reason": "POLICY_DENY"}]})
    assert cases[0].given.roles == {"requester", "reader"} and cases[1].given.roles == set()
    assert all(r.passed for r in run_cases(example, cases))


def test_the_policy_sees_the_requested_context_and_depth(example: PolicyBundle) -> None:
    fields = {k: v for k, v in READ.items() if k != "action"}
    (case,) = one(**fields, depth=4, context={"ticket": "T-1"}, single_use=True,
                  actions=["write", "read", "read"], expect="deny", reason="POLICY_DENY")
    request = case.given.request
    assert case.given.depth == 4 and request.single_use
    assert request.scope.actions == ("read", "write") and dict(request.context) == {
        "ticket": "T-1"}


# --- bad documents ------------------------------------------------------------------------

@pytest.mark.parametrize(("document", "needle"), [
    ({}, "non-empty list of cases"),
    ({"cases": []}, "non-empty list of cases"),
    ({"cases": [], "extra": 1}, "unknown key(s) ['extra']"),
    ({"format": "v2", "cases": [{}]}, "format must be"),
    ({"defaults": {"colour": "red"}, "cases": [{}]}, "defaults: unknown field(s) ['colour']"),
    ({"cases": ["read"]}, "case 1: a case must be a table"),
    ({"cases": [{**READ, "expect": "maybe"}]}, "case 1: expect must be"),
    ({"cases": [{**READ, "expect": "deny"}]}, "case 1: a \"deny\" case needs reason"),
    ({"cases": [{**READ, "expect": "deny", "reason": "NOPE"}]}, "unknown reason code 'NOPE'"),
    ({"cases": [{**READ, "expect": "allow", "reason": "POLICY_DENY"}]}, "has no reason"),
    ({"cases": [{**READ, "expect": "allow", "colour": "red"}]},
     "unknown field(s) ['colour']"),
    ({"cases": [{**READ, "actions": ["read"], "expect": "allow"}]}, "action or actions"),
    ({"cases": [{**READ, "principal": "agent x", "expect": "allow"}]}, "principal: String"),
    ({"cases": [{**READ, "tenant": "ACME", "expect": "allow"}]}, "tenant: String"),
    ({"cases": [{**READ, "action": "Read", "expect": "allow"}]}, "actions.0: String"),
    ({"cases": [{**READ, "context": {"amount": 1.5}, "expect": "allow"}]}, "context.amount"),
    ({"cases": [{**READ, "depth": -1, "expect": "allow"}]}, "depth must be"),
    ({"cases": [{**READ, "expect": "allow"}, {}]}, "case 2: missing field 'principal'"),
    ({"cases": [{**READ, "roles": "reader,requester", "expect": "allow"}]},
     "roles must be a list of strings"),
    ({"cases": [{**READ, "action": ["read"], "expect": "allow"}]}, "action must be a string"),
    ({"cases": [{**READ, "policies": "db-read", "expect": "allow"}]},
     "policies must be a list"),
    ({"cases": [{**{k: v for k, v in READ.items() if k != "action"}, "expect": "allow"}]},
     "actions: Tuple should have at least 1 item"),
    ({"cases": [{"name": "reads", **{k: v for k, v in READ.items() if k != "resource"},
                 "expect": "allow"}]}, "case 1 (reads): missing field 'resource'"),
])
def test_a_bad_document_is_refused_naming_the_case_and_field(document: dict[str, object],
                                                              needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cases(document)
    assert needle in str(info.value)


# --- the same rule as the engine ----------------------------------------------------------

def engine_verdict(bundle: PolicyBundle, case: PolicyCase) -> tuple[bool, tuple[Reason, ...],
                                                                     tuple[str, ...]]:
    """Sign the case's request as its principal and let the real decision engine decide it."""
    given = case.given
    signer = seeded_signer(given.request.signer)
    keyring = KeyRing([Principal(given.request.signer, given.request.tenant, signer.public_key,
                                 given.roles),
                       Principal("govledger:authority", "*", AUTHORITY.public_key,
                                 frozenset({"authority"}))])
    engine = Engine(authority=AUTHORITY, authority_identity="govledger:authority",
                    keyring=keyring, policy=bundle, limiter=_Unlimited(), limits=Limits())
    live = given.request.model_copy(update={
        "issued_at": T0, "window": request(issued_at=T0, ttl=timedelta(minutes=10)).window})
    outcome = engine.handle(Stream.REQUESTS, sign_event(live, signer), T0)
    parsed = parse_envelope(outcome.outputs[0].value)
    event = parse_payload(parsed.payload_type, parsed.payload)
    if isinstance(event, AuthorizationGranted | ApprovalRequired):  # allowed, or allowed
        return True, (), event.artifact.policy_ids               # once people approve it
    assert isinstance(event, AuthorizationDenied)
    return False, event.reasons, event.policy_ids


class _Unlimited:
    def allow(self, identity: str, now: float) -> bool:
        return True


def test_the_engine_decides_every_shipped_root_case_as_the_tool_does(
        example: PolicyBundle) -> None:
    roots = [c for c in shipped_cases() if c.given.depth == 0]
    assert len(roots) >= 15
    for case, result in zip(roots, run_cases(example, roots), strict=True):
        verdict = result.verdict
        assert engine_verdict(example, case) == (verdict.allow, verdict.reasons,
                                                  verdict.policy_ids), case.name


# --- explain ------------------------------------------------------------------------------

PAY_BOT = seeded_signer("pay-bot")


def pay_ring(roles: frozenset[str] = frozenset({"requester", "payments"})) -> KeyRing:
    return KeyRing([Principal("agent:pay-bot", "acme", PAY_BOT.public_key, roles)])


def transfer(**context: str | int) -> bytes:
    base = request(signer="agent:pay-bot", actions=("transfer",), resource="payments/acme/*",
                   single_use=True)
    return sign_event(base.model_copy(update={"context": context}), PAY_BOT)


def test_explain_a_signed_request_verified_with_the_keyring(example: PolicyBundle) -> None:
    found = explain(example, transfer(amount=500, currency="EUR"), keyring=pay_ring())
    assert found.signature == "verified" and found.event_id is not None
    assert found.verdict.allow and found.verdict.policy_ids == ("payments-transfer-under-limit",)
    assert found.given is not None and found.given.roles == {"requester", "payments"}
    risky = explain(example, transfer(amount=500, currency="EUR", risk="high"),
                    keyring=pay_ring())
    assert not risky.verdict.allow
    assert risky.verdict.policy_ids == ("forbid-high-risk-transfer",)


def test_explain_a_request_the_envelope_check_refuses(example: PolicyBundle) -> None:
    other = KeyRing([Principal("agent:pay-bot", "acme", seeded_signer("x").public_key,
                               frozenset({"requester", "payments"}))])
    found = explain(example, transfer(amount=500, currency="EUR"), keyring=other)
    assert found.signature == "refused" and found.given is None
    assert found.verdict.reasons == (Reason.KEY_UNKNOWN,)


def test_explain_the_roles_of_the_key_not_a_claim(example: PolicyBundle) -> None:
    found = explain(example, transfer(amount=500, currency="EUR"),
                    keyring=pay_ring(frozenset({"requester"})))
    assert not found.verdict.allow and found.verdict.reasons == (Reason.POLICY_DENY,)
    with pytest.raises(ConfigError, match="drop --roles"):
        explain(example, transfer(amount=5), keyring=pay_ring(),
                roles=frozenset({"requester", "payments"}))


def test_explain_an_envelope_without_a_keyring_needs_roles_and_says_unchecked(
        example: PolicyBundle) -> None:
    with pytest.raises(ConfigError, match="--roles or --keyring"):
        explain(example, transfer(amount=500, currency="EUR"))
    found = explain(example, transfer(amount=500, currency="EUR"),
                    roles=frozenset({"requester", "payments"}))
    assert found.signature == "not checked" and found.verdict.allow


def test_explain_an_unsigned_payload_and_a_case_form_request(example: PolicyBundle) -> None:
    payload = request(signer="agent:pay-bot", actions=("read",),
                      resource="payments/acme/*").model_dump_json().encode()
    found = explain(example, payload, keyring=pay_ring())
    assert found.signature == "unsigned" and found.verdict.policy_ids == ("payments-read",)
    case_form = json.dumps({**READ, "depth": 4}).encode()
    deep = explain(example, case_form)
    assert deep.verdict.policy_ids == ("forbid-deep-delegation",)
    assert explain(example, case_form, depth=0).verdict.allow
    assert not explain(example, case_form, depth=0, roles=frozenset({"reader"})).verdict.allow


def test_explain_a_child_request_needs_its_depth(example: PolicyBundle) -> None:
    child = request(signer="agent:pay-bot", actions=("read",), resource="payments/acme/*",
                    root="a" * 64, parent="b" * 64).model_dump_json().encode()
    with pytest.raises(ConfigError, match="--depth"):
        explain(example, child, keyring=pay_ring())
    assert explain(example, child, keyring=pay_ring(), depth=1).verdict.allow


@pytest.mark.parametrize(("data", "needle"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"kind": "AuthorizationRequested"}', "not an AuthorizationRequested"),
    (b'{"payloadType": "x", "payload": "", "signatures": []}', "not a readable envelope"),
])
def test_explain_refuses_what_is_not_a_request(example: PolicyBundle, data: bytes,
                                               needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        explain(example, data, roles=frozenset({"requester"}))


def test_a_case_is_frozen_data() -> None:
    (case,) = one(**READ, expect="allow")
    assert replace(case, name="x").given == case.given
