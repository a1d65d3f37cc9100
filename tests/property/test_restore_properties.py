"""A processor restored from its journal decides exactly as the one that never stopped.

Random histories of requests (valid, forged, from a principal without the requester role,
on the wrong stream, with bad resources, reused nonces, children, holders, some rate limited:
2 tokens, one more every 20 s), executions, revocations and poison go through one engine; a
second engine is restored from the journal form of its outcomes; then random follow-ups must
get byte-identical answers from both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.core.envelope import sign_event
from ledger.core.events import AuthorizationRevoked
from ledger.core.execution_events import ExecutionRequested
from ledger.core.keys import Signer
from ledger.core.streams import Stream
from processors.core.engine import Engine
from processors.core.outcomes import Outcome
from processors.core.ratelimit import TokenBucketLimiter
from tests.factories import ALICE, ENV, MALLORY, T0, request
from tests.unit.test_engine import BOB, REVOKER, RUNNER, engine, grant_of, json_round_trip

SIGNERS: dict[str, tuple[Signer, str]] = {
    "alice": (ALICE, "agent:alice"),
    "bob": (BOB, "agent:bob"),
    "runner": (RUNNER, "runner:1"),           # no requester role
    "forged": (BOB, "agent:alice"),           # bob's key, alice's name: refused on arrival
    "unknown": (MALLORY, "agent:alice"),      # key not in the keyring
    "revoker": (REVOKER, "ops:revoker"),
}
NONCES = [f"nonce-pool-{i:06d}" for i in range(2)]  # few: requests collide (REPLAY)
MANY_NONCES = [f"nonce-wide-{i:06d}" for i in range(12)]  # executions mostly do not
RESOURCES = ["db/*", "db/orders/*", "db/orders/1/*", "db/orders/../users/*"]

request_op = st.tuples(
    st.just("request"),
    st.sampled_from(["alice", "alice", "alice", "bob", "runner", "forged", "unknown"]),
    st.sampled_from(NONCES), st.sampled_from([*RESOURCES, "db/*", "db/orders/*"]),
    st.sampled_from([("read",), ("read", "write"), ("delete",)]),
    st.one_of(st.none(), st.integers(0, 5)),
    st.sampled_from([None, None, None, "agent:bob", "agent:nobody"]),
    st.sampled_from([Stream.REQUESTS] * 4 + [Stream.EXECUTIONS]), st.booleans())
execute_op = st.tuples(st.just("execute"), st.integers(0, 5), st.sampled_from(MANY_NONCES),
                       st.sampled_from(["read", "write"]), st.sampled_from(["runner", "alice"]))
revoke_op = st.tuples(st.just("revoke"), st.integers(0, 5),
                      st.sampled_from(["alice", "bob", "revoker"]), st.sampled_from(NONCES))
op = st.one_of(request_op, request_op, request_op, execute_op, execute_op, revoke_op,
               st.tuples(st.just("poison"), st.binary(max_size=20)),
               st.tuples(st.just("wait"), st.integers(1, 10)))  # minutes: past nonce retention
ops = st.lists(op, min_size=1, max_size=20)
GOOD_ROOT = ("request", "alice", "nonce-root-000001", "db/*", ("read", "write"), None, None,
             Stream.REQUESTS)  # + single_use: every history starts with one grant


@dataclass
class History:
    """Turns abstract operations into signed inputs, using the live engine's grants."""

    live: Engine
    grants: list[tuple[str, str]] = field(default_factory=list)  # (root, artifact id)
    journal: list[tuple[Stream, bytes, datetime, Outcome]] = field(default_factory=list)
    count: int = 0
    waited: timedelta = timedelta(0)

    def message(self, operation: tuple[object, ...]) -> tuple[Stream, bytes]:
        self.count += 1
        now = self.now()
        kind = operation[0]
        if kind == "request":
            _, who, nonce, resource, actions, parent, holder, stream, single = operation
            key, name = SIGNERS[str(who)]
            root = parent_id = None
            if isinstance(parent, int) and self.grants:
                root, parent_id = self.grants[parent % len(self.grants)]
            event = request(signer=name, nonce=str(nonce), resource=str(resource),
                            actions=actions, issued_at=now, root=root,  # type: ignore[arg-type]
                            parent=parent_id, holder=holder,  # type: ignore[arg-type]
                            single_use=bool(single))
            return stream, sign_event(event, key)  # type: ignore[return-value]
        if kind in ("execute", "revoke") and self.grants:
            root, artifact = self.grants[int(operation[1]) % len(self.grants)]  # type: ignore[call-overload]
            if kind == "execute":
                _, _, nonce, action, who = operation
                key, name = SIGNERS[str(who)]
                execution = ExecutionRequested(
                    signer=name, tenant="acme", nonce=str(nonce), issued_at=now,
                    artifact_id=artifact, root=root, action=str(action),
                    resource="db/orders/1/x", environment=ENV)
                return Stream.EXECUTIONS, sign_event(execution, key)
            _, _, who, nonce = operation
            key, name = SIGNERS[str(who)]
            revocation = AuthorizationRevoked(signer=name, tenant="acme", nonce=str(nonce),
                                              issued_at=now, artifact_id=artifact, root=root)
            return Stream.REVOCATIONS, sign_event(revocation, key)
        if kind == "wait":
            self.waited += timedelta(minutes=int(operation[1]))  # type: ignore[call-overload]
            return Stream.REQUESTS, b"a poison message after a pause"
        if kind == "poison":
            return Stream.REQUESTS, bytes(operation[1]) or b"{}"  # type: ignore[call-overload]
        return Stream.REQUESTS, b"nothing granted yet"

    def run(self, operation: tuple[object, ...]) -> None:
        stream, raw = self.message(operation)
        outcome = self.live.handle(stream, raw, self.now())
        if not outcome.replayed:  # as processors.journal: a redelivery is not journaled again
            self.journal.append((stream, raw, self.now(), outcome))
        if outcome.allow and stream is Stream.REQUESTS and not outcome.replayed:
            root = outcome.outputs[0].key.decode()
            self.grants.append((root, grant_of(outcome)[0]))

    def now(self) -> datetime:
        return T0 + self.waited + timedelta(seconds=self.count)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(single_use=st.booleans(), past=ops, future=ops)
def test_a_restored_engine_decides_every_follow_up_as_the_live_one(
        single_use: bool, past: list[tuple[object, ...]],
        future: list[tuple[object, ...]]) -> None:
    history = History(engine(limiter=TokenBucketLimiter(rate=0.05, burst=2)))  # type: ignore[arg-type]
    for operation in [(*GOOD_ROOT, single_use), *past]:
        history.run(operation)
    restored = engine(limiter=TokenBucketLimiter(rate=0.05, burst=2))  # type: ignore[arg-type]
    for stream, raw, arrival, outcome in history.journal:
        restored.restore(stream, raw, arrival, json_round_trip(outcome))
    for operation in future:
        stream, raw = history.message(operation)
        now = history.now()
        a, b = history.live.handle(stream, raw, now), restored.handle(stream, raw, now)
        assert (a.allow, a.reasons, a.outputs) == (b.allow, b.reasons, b.outputs), operation
