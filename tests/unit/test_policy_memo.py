"""PolicyMemo: remembered Cedar verdicts are exactly the verdicts Cedar gives, inputs apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ledger.core.events import AuthorizationRequested
from processors.core.checks import PolicyMemo, evaluate_policy
from processors.policy import PolicyBundle, PolicyDecision
from tests.factories import ENV, ENV2, request

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
READER = frozenset({"requester", "reader"})


@dataclass
class Counting:
    """The real example bundle, counting calls and optionally failing."""

    bundle: PolicyBundle
    calls: int = 0
    fail: Exception | None = None
    error: bool = False
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = self.bundle.digest

    def evaluate(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object]) -> PolicyDecision:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if self.error:
            return PolicyDecision(False, (), ("injected evaluation error",))
        return self.bundle.evaluate(principal, action, resource, context)


def with_context(base: AuthorizationRequested, **meta: object) -> AuthorizationRequested:
    return base.model_copy(update={"context": meta})


def test_memo_verdicts_equal_fresh_verdicts() -> None:
    bundle = PolicyBundle.load(EXAMPLES)
    memo = PolicyMemo(bundle)
    cases = [(request(actions=a, resource=r, environments=e), roles, depth)
             for a in (("read",), ("read", "write"), ("delete",))
             for r in ("db/orders/*", "prod/secrets/k", "db/x")
             for e in ((ENV,), (ENV, ENV2))
             for roles in (READER, frozenset({"requester"}),
                           frozenset({"requester", "orders-writer"}))
             for depth in (0, 3, 4)]
    for req, roles, depth in cases * 2:
        assert memo.verdict(req, roles, depth) == evaluate_policy(bundle, req, roles, depth)
    allowed = sum(memo.verdict(*case).allow for case in cases)
    assert 0 < allowed < len(cases)  # both outcomes are exercised
    assert len(memo.entries) == len(cases)


def test_hit_skips_the_engine_and_every_input_is_part_of_the_key() -> None:
    policy = Counting(PolicyBundle.load(EXAMPLES))
    memo = PolicyMemo(policy)
    base = request()
    assert memo.verdict(base, READER, 0).allow
    assert memo.verdict(request(), READER, 0).allow  # an equal request: a hit
    assert policy.calls == 1
    variants = [
        (request(signer="agent:bob"), READER, 0), (request(tenant="other"), READER, 0),
        (request(actions=("write",)), READER, 0), (request(resource="db/x"), READER, 0),
        (request(environments=(ENV2,)), READER, 0), (base, frozenset({"requester"}), 0),
        (base, READER, 1), (request(single_use=True), READER, 0),
        (with_context(base, ticket="T-1"), READER, 0),
        (with_context(base, ticket=1), READER, 0), (with_context(base, ticket=True), READER, 0),
    ]
    for req, roles, depth in variants:
        memo.verdict(req, roles, depth)
    assert policy.calls == 1 + len(variants)


def test_true_and_one_in_the_context_are_different_inputs() -> None:
    """``change_window`` is a Bool in the schema: True is fine, 1 is a schema error. Were the
    key blind to the type, the remembered allow for True would answer the request with 1."""
    memo = PolicyMemo(PolicyBundle.load(EXAMPLES))
    assert memo.verdict(with_context(request(), change_window=True), READER, 0).allow
    refused = memo.verdict(with_context(request(), change_window=1), READER, 0)
    assert not refused.allow and "policy error" in refused.detail


def test_errors_and_exceptions_are_never_remembered() -> None:
    policy = Counting(PolicyBundle.load(EXAMPLES), fail=RuntimeError("engine down"))
    memo = PolicyMemo(policy)
    assert not memo.verdict(request(), READER, 0).allow
    policy.fail, policy.error = None, True
    assert not memo.verdict(request(), READER, 0).allow
    policy.error = False
    assert memo.verdict(request(), READER, 0).allow  # recomputed: it now permits
    assert policy.calls == 3 and len(memo.entries) == 1


def test_memo_is_bounded() -> None:
    memo = PolicyMemo(PolicyBundle.load(EXAMPLES), max_entries=8)
    for i in range(30):
        assert memo.verdict(request(resource=f"db/{i}"), READER, 0).allow
    assert len(memo.entries) == 8
