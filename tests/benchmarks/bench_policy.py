"""Cedar evaluation time per decision with the example bundle.

Run: ``.venv/bin/python tests/benchmarks/bench_policy.py [--n 5000]``

Reports median and p99 microseconds per decision for:

* ``cedarpy, policy text``: ``cedarpy.is_authorized`` given the policy *text* (re-parsed on
  every call), the baseline that a naive integration pays;
* ``cedarpy, pre-parsed``: the same with the pre-parsed ``PolicySet`` and ``Entities``
  handles and no request validation (the floor);
* ``cedarpy, pre-parsed + schema``: the same, with request validation against the schema;
* ``bundle.evaluate``: the full govledger path (resource normalisation, entity building,
  the schema check of the request's shape, fail-closed decision), with the same principal
  and resource every call, with a new principal every call (its entity parsed and validated
  each time), with a new resource every call (what real agents send), and loaded with
  ``validate_requests=False``;
* ``bundle.evaluate_actions x3``: three actions on one resource in one cedarpy batch call,
  time divided by three;
* ``cedarpy batch x100``: ``is_authorized_batch`` with 100 distinct requests sharing one
  entity set, pre-parsed, time divided by 100.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import cedarpy

from processors.policy import PolicyBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "processors" / "examples" / "policies"
CONTEXT: dict[str, object] = {
    "tenant": "acme", "environments": ["sha256:" + "e" * 64], "depth": 1,
    "roles": ["payments", "requester"], "single_use": True,
    "meta": {"amount": 500, "currency": "EUR"}}


def timed(fn: Callable[[], object], n: int, per_call: int = 1) -> tuple[float, float]:
    """(median, p99) microseconds per decision over ``n`` calls, after a warm-up."""
    for _ in range(min(200, n)):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000 / per_call)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="calls per measurement")
    args = parser.parse_args()
    bundle = PolicyBundle.load(EXAMPLES)
    loose = PolicyBundle.load(EXAMPLES, validate_requests=False)
    text = "\n".join(t for n, t in sorted(bundle.files().items()) if n.endswith(".cedar"))
    policy_set = cedarpy.PolicySet.from_str(text)
    principal = {"type": "Agent", "id": "agent:pay-bot"}
    resource = {"type": "Resource", "id": "payments/acme/invoices/*"}
    entities = [{"uid": principal, "attrs": {"tenant": "acme", "roles": ["payments"]},
                 "parents": []},
                {"uid": resource, "attrs": {"path": resource["id"], "wildcard": True},
                 "parents": [{"type": "Resource", "id": "payments/acme/*"},
                             {"type": "Resource", "id": "payments/*"},
                             {"type": "Resource", "id": "*"}]}]
    entities_handle = cedarpy.Entities.from_json_str(json.dumps(entities))
    request = {"principal": principal, "action": {"type": "Action", "id": "transfer"},
               "resource": resource, "context": CONTEXT}
    assert cedarpy.is_authorized(request, policy_set, entities_handle).allowed
    assert bundle.evaluate("agent:pay-bot", "transfer", resource["id"], CONTEXT).allow
    schema = cedarpy.Schema.from_str(bundle.files()["schema.cedarschema"])
    counter = itertools.count()
    batch = [{**request, "principal": {"type": "Agent", "id": "agent:pay-bot"}}
             for _ in range(100)]

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("cedarpy, policy text", lambda: cedarpy.is_authorized(request, text,
                                                               json.dumps(entities)), 1),
        ("cedarpy, pre-parsed", lambda: cedarpy.is_authorized(request, policy_set,
                                                              entities_handle), 1),
        ("cedarpy, pre-parsed + schema", lambda: cedarpy.is_authorized(
            request, policy_set, entities_handle, schema=schema), 1),
        ("bundle.evaluate (entity cache hit)", lambda: bundle.evaluate(
            "agent:pay-bot", "transfer", "payments/acme/invoices/*", CONTEXT), 1),
        ("bundle.evaluate (no request check)", lambda: loose.evaluate(
            "agent:pay-bot", "transfer", "payments/acme/invoices/*", CONTEXT), 1),
        ("bundle.evaluate (new principal)", lambda: bundle.evaluate(
            f"agent:{next(counter)}", "transfer", "payments/acme/invoices/*", CONTEXT), 1),
        ("bundle.evaluate (new resource)", lambda: bundle.evaluate(
            "agent:pay-bot", "transfer", f"payments/acme/invoices/{next(counter)}", CONTEXT), 1),
        ("bundle.evaluate_actions x3", lambda: bundle.evaluate_actions(
            "agent:pay-bot", ("transfer", "read", "delete"), "payments/acme/invoices/*",
            CONTEXT), 3),
        ("cedarpy batch x100", lambda: cedarpy.is_authorized_batch(
            batch, policy_set, entities_handle), 100),
    ]
    print(f"{len(bundle.policy_ids)} policies, n={args.n}, cedarpy {version('cedarpy')}")
    print(f"{'case':36} {'median us':>10} {'p99 us':>10}")
    for name, fn, per_call in cases:
        n = args.n if per_call <= 3 else max(200, args.n // 20)
        median, p99 = timed(fn, n, per_call)
        print(f"{name:36} {median:10.1f} {p99:10.1f}")


if __name__ == "__main__":
    main()
