"""The bundle's fast evaluation path decides exactly as Cedar with the schema on every call.

The reference below is the plain cedarpy call the bundle made before it validated shapes
once (processors/policy.py): principal and resource entities and the request, all validated
against the schema on every call. One bundle, reused across examples, so its remembered
shapes and principals are exercised by later examples.
"""

from __future__ import annotations

import json
from pathlib import Path

import cedarpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.core.scope import ancestors, normalise_resource
from processors.policy import PolicyBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
BUNDLE = PolicyBundle.load(EXAMPLES)
SCHEMA = cedarpy.Schema.from_str((EXAMPLES / "schema.cedarschema").read_text("utf-8"))
POLICIES = cedarpy.PolicySet.from_str("\n".join(
    text for name, text in sorted(BUNDLE.files().items()) if name.endswith(".cedar")))
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.sampled_from(["EUR", "USD", "high", "", "x"]), st.booleans(),
                    st.integers(-5, 20_000), st.sampled_from([2**63, -(2**63) - 1, 2**62]))
typed_metas = st.fixed_dictionaries({}, optional={
    "amount": st.integers(-5, 20_000), "currency": st.sampled_from(["EUR", "USD", "JPY"]),
    "risk": st.sampled_from(["high", "low"]), "ticket": st.sampled_from(["T-1", ""]),
    "change_window": st.booleans()})
metas = st.one_of(typed_metas, st.dictionaries(st.sampled_from(
    ["amount", "currency", "risk", "ticket", "change_window", "undeclared"]), scalars,
    max_size=4))
contexts = st.fixed_dictionaries({
    "tenant": st.sampled_from(["acme", "other"]),
    "environments": st.lists(st.sampled_from(["sha256:" + "e" * 64, "x"]), max_size=2),

    "depth": st.one_of(st.integers(0, 6), st.just(True)),
    "roles": st.lists(st.sampled_from(["payments", "reader", "deployer", "requester"]),
                      min_size=1, max_size=3, unique=True),
    "single_use": st.booleans(), "meta": metas})
resources = st.sampled_from(["payments/acme/invoices/1", "payments/*", "db/x", "db/*", "*",
                             "prod/secrets/k", "prod/services/api", "infra/staging/a"])
actions = st.sampled_from(["read", "write", "transfer", "delete", "deploy", "fly"])
# (action, resource, role) that some permit of the example grants, so allows are common
GRANTABLE = st.sampled_from([("read", "db/x", "reader"), ("read", "payments/*", "payments"),
                             ("transfer", "payments/acme/invoices/1", "payments"),
                             ("deploy", "infra/staging/a", "deployer"),
                             ("deploy", "prod/services/api", "deployer")])


def reference(principal: str, action: str, resource: str,
              context: dict[str, object]) -> tuple[bool, tuple[str, ...], bool]:
    path = normalise_resource(resource)
    entities = [
        {"uid": {"type": "Agent", "id": principal},
         "attrs": {"tenant": context["tenant"], "roles": context["roles"]}, "parents": []},
        {"uid": {"type": "Resource", "id": path},
         "attrs": {"path": path, "wildcard": path == "*" or path.endswith("/*")},
         "parents": [{"type": "Resource", "id": a} for a in ancestors(path)]}]
    request = {"principal": {"type": "Agent", "id": principal},
               "action": {"type": "Action", "id": action},
               "resource": {"type": "Resource", "id": path}, "context": context}
    try:
        parsed = cedarpy.Entities.from_json_str(json.dumps(entities), SCHEMA)
        result = cedarpy.is_authorized(request, POLICIES, parsed, schema=SCHEMA)
    except ValueError:
        return False, (), True
    errors = bool(result.diagnostics.errors)
    ids = result.diagnostics.id_annotations_by_reason   # positional id -> @id
    reasons = tuple(sorted(ids[r] for r in result.diagnostics.reasons))
    allow = result.decision == cedarpy.Decision.Allow and bool(reasons) and not errors
    return allow, (reasons if result.decision != cedarpy.Decision.NoDecision else ()), errors


@SETTINGS
@given(st.sampled_from(["agent:a", "agent:b"]), actions, resources, contexts,
       st.one_of(st.none(), GRANTABLE))
def test_fast_path_decides_as_cedar_with_the_schema(
        principal: str, action: str, resource: str, context: dict[str, object],
        grantable: tuple[str, str, str] | None) -> None:
    if grantable is not None:
        action, resource, role = grantable
        context = {**context, "roles": [role], "single_use": True}
    decision = BUNDLE.evaluate(principal, action, resource, context)
    assert (decision.allow, bool(decision.errors)) == reference(
        principal, action, resource, context)[::2]
    if not decision.errors:
        assert decision.determining == reference(principal, action, resource, context)[1]
