"""Policy test cases: a request with the outcome it should get, run through the processor's rule.

``govledger policy test DIR CASES`` reads a cases document (TOML or JSON, docs/policy.md
"Policy tests"), builds each case's ``AuthorizationRequested`` with the same model the
processor verifies, and decides it with :func:`processors.core.checks.decide_by_policy`, the
stateless part of ``decide_request`` (requester role, resource pattern, Cedar policy): one
rule for the processor and the tools, never a copy. The checks that need state or a clock
(replay, holder, time window, lineage, rate limit) are not run; a case gives the lineage
``depth`` the processor would compute instead.

A document (format ``govledger/policy-cases/v1``)::

    format = "govledger/policy-cases/v1"   # optional; any other value is refused
    [defaults]                             # optional: request fields every case starts from
    tenant = "acme"
    [[cases]]
    name = "payments bot transfers 500 EUR"
    principal = "agent:pay-bot"            # the signer's identity
    roles = ["requester", "payments"]      # the principal's roles (from its key)
    actions = ["transfer"]                 # or: action = "transfer"
    resource = "payments/acme/invoices/*"
    context = { amount = 500, currency = "EUR" }   # the request's metadata
    single_use = true                      # default false
    depth = 0                              # lineage depth, default 0 (a root request)
    environments = ["sha256:..."]          # default: one placeholder digest
    expect = "allow"                       # or "deny"
    reason = "POLICY_DENY"                 # required for "deny": the first reason code
    policies = ["payments-transfer-under-limit"]   # optional: the determining policy ids

Every problem in the document (an unknown field, a value the request model refuses, a deny
without a reason) raises ConfigError naming the case; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pydantic

from ledger.core.events import AuthorizationRequested
from ledger.errors import ConfigError, Reason
from processors.core.checks import PolicyEngine, Verdict, decide_by_policy

FORMAT = "govledger/policy-cases/v1"
# Placeholders for the request fields no policy sees (the time window is the processor's
# clock check, not the policy's); fixed so one case always builds the same request.
CASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
PLACEHOLDER_ENVIRONMENT = "sha256:" + "0" * 64
REQUEST_FIELDS = frozenset({"principal", "tenant", "roles", "action", "actions", "resource",
                            "context", "single_use", "depth", "environments"})
EXPECT_FIELDS = frozenset({"name", "expect", "reason", "policies"})
MAX_CASES = 10_000
_MODEL_FIELD_NAMES = {"signer": "principal", "scope": "", "context": "context"}


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """What the policy decision takes: the request, the signer's roles, the lineage depth."""

    request: AuthorizationRequested
    roles: frozenset[str]
    depth: int


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One case: ``expect_allow``; for a denial the first ``reason``; optionally the
    determining ``policies`` (compared as a set)."""

    name: str
    given: PolicyInput
    expect_allow: bool
    reason: Reason | None = None
    policies: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case's verdict and how it differs from the expectation (empty: it passed)."""

    case: PolicyCase
    verdict: Verdict
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def _strings(value: object, what: str) -> tuple[str, ...]:
    # A bare string is refused, not split or wrapped: "reader,requester" must not quietly
    # become one role named "reader,requester".
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of strings")
    return tuple(value)


def _model_error(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if loc and loc[0] in _MODEL_FIELD_NAMES:
        loc[0] = _MODEL_FIELD_NAMES[loc[0]]
    where = ".".join(p for p in loc if p) or "request"
    return f"{where}: {first['msg']}"


def build_input(fields: Mapping[str, object], nonce: str) -> PolicyInput:
    """The request, roles and depth from request ``fields`` (module docstring). ``nonce``
    must match the model's nonce pattern. Raises ConfigError naming the bad field."""
    unknown = sorted(set(fields) - REQUEST_FIELDS)
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown}")
    if "action" in fields and "actions" in fields:
        raise ConfigError("give action or actions, not both")
    for required in ("principal", "tenant", "resource"):
        if required not in fields:
            raise ConfigError(f"missing field {required!r}")
    single = fields.get("action")
    if "action" in fields and not isinstance(single, str):
        raise ConfigError("action must be a string (several: actions = [...])")
    actions = (_strings(fields["actions"], "actions") if "actions" in fields
               else (single,) if isinstance(single, str) else ())
    depth, context = fields.get("depth", 0), fields.get("context", {})
    if type(depth) is not int or depth < 0:
        raise ConfigError("depth must be a non-negative integer")
    if not isinstance(context, Mapping):
        raise ConfigError("context must be a table of metadata")
    data = {
        "signer": fields["principal"], "tenant": fields["tenant"], "nonce": nonce,
        "issued_at": CASE_TIME,
        "scope": {"actions": tuple(sorted(set(actions))), "resource": fields["resource"]},
        "environments": tuple(sorted(set(_strings(
            fields.get("environments", [PLACEHOLDER_ENVIRONMENT]), "environments")))),
        "window": {"not_before": CASE_TIME, "not_after": CASE_TIME + timedelta(hours=1)},
        "single_use": fields.get("single_use", False), "context": dict(context),
    }
    try:
        request = AuthorizationRequested.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_model_error(exc)) from exc
    return PolicyInput(request, frozenset(_strings(fields.get("roles", []), "roles")), depth)


def _expectation(raw: Mapping[str, object]) -> tuple[bool, Reason | None, tuple[str, ...] | None]:
    expect = raw.get("expect")
    if expect not in ("allow", "deny"):
        raise ConfigError(f'expect must be "allow" or "deny", got {expect!r}')
    reason: Reason | None = None
    if expect == "deny":
        if "reason" not in raw:
            raise ConfigError('a "deny" case needs reason (e.g. "POLICY_DENY")')
        try:
            reason = Reason(str(raw["reason"]))
        except ValueError as exc:
            raise ConfigError(f"unknown reason code {raw['reason']!r}") from exc
    elif "reason" in raw:
        raise ConfigError('an "allow" case has no reason')
    policies = (tuple(sorted(set(_strings(raw["policies"], "policies"))))
                if "policies" in raw else None)
    return expect == "allow", reason, policies


def _case(raw: object, index: int, defaults: Mapping[str, object]) -> PolicyCase:
    if not isinstance(raw, Mapping):
        raise ConfigError("a case must be a table")
    name = raw.get("name", f"case {index}")
    if not isinstance(name, str) or not name:
        raise ConfigError("name must be a non-empty string")
    fields = {**defaults, **{k: v for k, v in raw.items() if k not in EXPECT_FIELDS}}
    given = build_input(fields, f"policycase{index:06d}")
    allow, reason, policies = _expectation(raw)
    return PolicyCase(name, given, allow, reason, policies)


def parse_cases(document: Mapping[str, object]) -> tuple[PolicyCase, ...]:
    """The cases of a decoded cases document (module docstring). Raises ConfigError naming
    the case (its number from 1, and its name) and the field at fault."""
    unknown = sorted(set(document) - {"format", "defaults", "cases"})
    if unknown:
        raise ConfigError(f"cases document: unknown key(s) {unknown}")
    if document.get("format", FORMAT) != FORMAT:
        raise ConfigError(f"cases document: format must be {FORMAT!r}")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise ConfigError("cases document: defaults must be a table")
    if unknown := sorted(set(defaults) - REQUEST_FIELDS):
        raise ConfigError(f"cases document: defaults: unknown field(s) {unknown}")
    raw_cases = document.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise ConfigError("cases document: needs a non-empty list of cases ([[cases]])")
    if len(raw_cases) > MAX_CASES:
        raise ConfigError(f"cases document: more than {MAX_CASES} cases")
    cases = []
    for index, raw in enumerate(raw_cases, start=1):
        label = f"case {index}"
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            label += f" ({raw['name']})"
        try:
            cases.append(_case(raw, index, defaults))
        except ConfigError as exc:
            raise ConfigError(f"cases document: {label}: {exc}") from exc
    return tuple(cases)


def check_case(case: PolicyCase, verdict: Verdict) -> CaseResult:
    """Compare ``verdict`` with the case's expectation."""
    mismatches: list[str] = []
    if verdict.allow != case.expect_allow:
        mismatches.append(f"expected {'allow' if case.expect_allow else 'deny'}, got "
                          f"{'allow' if verdict.allow else 'deny'}")
    elif case.reason is not None and verdict.reasons[:1] != (case.reason,):
        got = verdict.reasons[0].value if verdict.reasons else "none"
        mismatches.append(f"expected reason {case.reason.value}, got {got}")
    if case.policies is not None and tuple(sorted(verdict.policy_ids)) != case.policies:
        mismatches.append(f"expected policies {list(case.policies)}, "
                          f"got {sorted(verdict.policy_ids)}")
    return CaseResult(case, verdict, tuple(mismatches))


def run_cases(policy: PolicyEngine, cases: Sequence[PolicyCase]) -> tuple[CaseResult, ...]:
    """Decide every case with the processor's rule and compare. Never raises."""
    return tuple(check_case(c, decide_by_policy(policy, c.given.request, c.given.roles,
                                                c.given.depth)) for c in cases)
