"""The kill switch at scale (issue 13): how long from a TenantSuspended to the gate's verdict
refusing every outstanding artifact of the tenant, on the decision engine itself.

Run: ``PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_suspension.py [--artifacts 10000]``

Grants ``--artifacts`` artifacts to one agent of tenant acme (half of them delegated one level
below a root grant), then, in the same process, times:

* **apply**: deciding the signed TenantSuspended (the governance rules, the authority's
  signed answer): after it, every verdict refuses;
* **verdicts**: an ExecutionRequested for every outstanding artifact, each refused
  TENANT_SUSPENDED (the check walks the artifact's ancestors: O(depth), no per-artifact work
  at suspension time);
* **floor**: the same verdicts with no suspension in force (each allowed), the same run.

Prints the figures, the CPU of this process (the only one: no broker, no ledger) and the
load average. The engine is what the processor runs; over Kafka add one hop of the
processor's batch latency (docs/performance.md) to the apply time.
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from datetime import timedelta

from ledger.core.envelope import event_id, read_stored, sign_event
from ledger.core.execution_events import ExecutionRequested
from ledger.core.governance import GovernanceState
from ledger.core.governance_events import PolicyPublished, PrincipalRegistered, TenantSuspended
from ledger.core.keys import Principal
from ledger.core.streams import Stream
from ledger.datadir import example_policies
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.policy import PolicyBundle
from tests.factories import ALICE, AUTHORITY, ENV, T0, request, seeded_signer

OPERATOR, RUNNER = seeded_signer("operator"), seeded_signer("runner")


class Unlimited:
    def allow(self, identity: str, now: float) -> bool:
        return True


def registration(who: str, tenant: str, key: bytes, n: int, *roles: str) -> PrincipalRegistered:
    from ledger.core.keys import key_id
    return PrincipalRegistered(signer="op", tenant=tenant, nonce=f"bench-reg-{n:08d}",
                               issued_at=T0, identity=who,
                               public_key=base64.b64encode(key).decode(), key_id=key_id(key),
                               roles=tuple(sorted(roles)))


def engine() -> Engine:
    """An engine after a genesis: the operator, the authority, alice, a runner, the examples."""
    live = Engine(authority=AUTHORITY, authority_identity="govledger:authority",
                  governance=GovernanceState(), compile_policy=PolicyBundle.from_files,
                  operator=Principal("op", "*", OPERATOR.public_key, frozenset({"admin"})),
                  limiter=Unlimited(), limits=Limits(max_ttl=timedelta(days=1)))
    files = dict(PolicyBundle.load(example_policies()).files())
    for n, event in enumerate([
            registration("op", "*", OPERATOR.public_key, 0, "admin"),
            registration("govledger:authority", "*", AUTHORITY.public_key, 1, "authority"),
            registration("agent:alice", "acme", ALICE.public_key, 2, "reader", "requester"),
            registration("runner:1", "acme", RUNNER.public_key, 3, "executor"),
            PolicyPublished(signer="op", tenant="*", nonce="bench-policy-0001", issued_at=T0,
                            version="1", policy_digest=PolicyBundle.from_files(files).digest,
                            files=files)]):
        outcome = live.handle(Stream.GOVERNANCE, sign_event(event, OPERATOR), T0)
        assert outcome.allow is True, (n, outcome.reasons)
    return live


def grants(live: Engine, count: int) -> list[tuple[str, str]]:
    """(artifact id, root) of ``count`` granted artifacts: a root, then children under it."""
    out: list[tuple[str, str]] = []
    root_grant = live.handle(Stream.REQUESTS, sign_event(request(nonce="bench-root-000001"),
                                                           ALICE), T0)
    stored = read_stored(root_grant.outputs[0].value)
    assert stored is not None and root_grant.allow
    root_id, root = event_id(stored.payload), root_grant.subject
    out.append((root_id, root))
    for n in range(1, count):
        child = n % 2 == 0
        event = request(nonce=f"bench-nonce-{n:08d}", resource="db/orders/1",
                        root=root if child else None, parent=root_id if child else None)
        decided = live.handle(Stream.REQUESTS, sign_event(event, ALICE), T0)
        stored = read_stored(decided.outputs[0].value)
        assert stored is not None and decided.allow, decided.reasons
        out.append((event_id(stored.payload), root if child else decided.subject))
    return out


def verdicts(live: Engine, artifacts: list[tuple[str, str]], tag: str) -> tuple[float, int]:
    """Seconds to ask a verdict for every artifact, and how many were refused."""
    refused = 0
    started = time.perf_counter()
    for n, (artifact_id, root) in enumerate(artifacts):
        execution = ExecutionRequested(signer="runner:1", tenant="acme",
                                       nonce=f"{tag}-{n:010d}", issued_at=T0,
                                       artifact_id=artifact_id, root=root, action="read",
                                       resource="db/orders/1", environment=ENV)
        outcome = live.handle(Stream.EXECUTIONS, sign_event(execution, RUNNER), T0)
        refused += outcome.allow is False
    return time.perf_counter() - started, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=int, default=10_000)
    args = parser.parse_args()
    cpu0 = time.process_time()
    live = engine()
    artifacts = grants(live, args.artifacts)
    floor_s, floor_refused = verdicts(live, artifacts, "floor")
    suspend = sign_event(TenantSuspended(signer="op", tenant="acme", nonce="bench-suspend-01",
                                         issued_at=T0), OPERATOR)
    started = time.perf_counter()
    applied = live.handle(Stream.GOVERNANCE, suspend, T0)
    apply_s = time.perf_counter() - started
    assert applied.allow is True
    after_s, refused = verdicts(live, artifacts, "after")
    n = len(artifacts)
    print(f"artifacts outstanding: {n} (half delegated one level below a root)")
    print(f"apply TenantSuspended: {apply_s * 1e3:.2f} ms (then every verdict refuses)")
    print(f"verdicts after it: {refused}/{n} refused TENANT_SUSPENDED in {after_s:.2f} s, "
          f"{after_s / n * 1e6:.0f} us each")
    print(f"floor, same run, no suspension: {n - floor_refused}/{n} allowed in {floor_s:.2f} s,"
          f" {floor_s / n * 1e6:.0f} us each")
    print(f"CPU of this process (the only one): {time.process_time() - cpu0:.1f} s; "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
