"""The schema checked where the data enters, not per evaluation (processors/policy.py).

A context shape is validated against the schema once per action and remembered; resource
entities are shaped once at load. None of that may let through a request the schema refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import ConfigError
from processors.policy import PolicyBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
SCHEMA = (EXAMPLES / "schema.cedarschema").read_text(encoding="utf-8")
ENV = "sha256:" + "e" * 64


def context(**meta: object) -> dict[str, object]:
    return {"tenant": "acme", "environments": [ENV], "depth": 0, "roles": ["reader"],
            "single_use": True, "meta": meta}


def load(tmp_path: Path, policies: str, schema: str) -> PolicyBundle:
    (tmp_path / "p.cedar").write_text(policies, encoding="utf-8")
    (tmp_path / "schema.cedarschema").write_text(schema, encoding="utf-8")
    return PolicyBundle.load(tmp_path)


@pytest.mark.parametrize("rejected", [
    {**context(), "meta": {"undeclared": 1}},
    {**context(), "meta": {"amount": "5"}},
    {**context(), "meta": {"amount": 2**63}},            # the same shape as a valid amount
    {**context(), "meta": {"amount": -(2**63) - 1}},
    {**context(), "depth": True},
    {**context(), "extra": 1},
    {**context(), "environments": [ENV, 1]},
    {k: v for k, v in context().items() if k != "depth"},
])
def test_request_the_schema_rejects_is_denied_after_valid_ones(rejected: dict[str, object],
                                                               ) -> None:
    bundle = PolicyBundle.load(EXAMPLES)
    for amount in (1, 2):   # the valid shapes are remembered by now
        assert bundle.evaluate("agent:r", "read", f"db/{amount}", context(amount=amount)).allow
    decision = bundle.evaluate("agent:r", "read", "db/x", rejected)
    assert not decision.allow and decision.errors
    assert bundle.evaluate("agent:r", "read", "db/y", context(amount=3)).allow


def test_action_outside_the_schema_is_denied_in_a_remembered_shape() -> None:
    bundle = PolicyBundle.load(EXAMPLES)
    assert bundle.evaluate("agent:r", "read", "db/x", context()).allow
    decision = bundle.evaluate("agent:r", "fly", "db/x", context())
    assert not decision.allow and decision.errors


EXTENSION_SCHEMA = SCHEMA.replace("  ticket?: String,", "  ticket?: String,\n  ip?: ipaddr,\n"
                                  "  owner?: Agent,")
EXTENSION_POLICIES = (
    '@id("permit-internal")\npermit (principal, action == Action::"read", resource)\n'
    'when { context.meta has ip && context.meta.ip.isInRange(ip("10.0.0.0/8")) };\n')


def test_extension_typed_context_is_read_through_the_schema_every_time(tmp_path: Path,
                                                                      ) -> None:
    bundle = load(tmp_path, EXTENSION_POLICIES, EXTENSION_SCHEMA)
    for _ in range(3):   # a remembered shape would read the address as a plain string
        assert bundle.evaluate("agent:r", "read", "db/x", context(ip="10.1.2.3")).allow
        assert not bundle.evaluate("agent:r", "read", "db/x", context(ip="192.0.2.1")).allow
        assert bundle.evaluate("agent:r", "read", "db/x", context(ip="nonsense")).errors


def test_schema_without_the_resource_shape_refuses_to_load(tmp_path: Path) -> None:
    flat = SCHEMA.replace("entity Resource in [Resource] = {", "entity Resource = {")
    with pytest.raises(ConfigError, match="must declare Resource in"):
        load(tmp_path, '@id("a")\npermit (principal, action, resource);\n', flat)
    (tmp_path / "p.cedar").unlink()
    mistyped = SCHEMA.replace("  wildcard: Bool,", "  wildcard: String,")
    with pytest.raises(ConfigError, match="must declare Resource in"):
        load(tmp_path, '@id("a")\npermit (principal, action, resource);\n', mistyped)
