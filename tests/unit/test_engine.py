"""The decision engine, pure: every request/execution/revocation reason, idempotence, restore."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from ledger.core.envelope import parse_envelope, parse_payload, sign_event, verify_envelope
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRevoked,
    Event,
)
from ledger.core.execution_events import ExecutionRefused, ExecutionRequested
from ledger.core.keys import KeyRing, Principal, Signer
from ledger.core.streams import Stream
from ledger.errors import Reason
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.outcomes import Outcome
from tests.factories import ALICE, AUTHORITY, ENV, ENV2, T0, request, seeded_signer

BOB = seeded_signer("bob")
RUNNER = seeded_signer("runner")
REVOKER = seeded_signer("revoker")
AUTH_ID = "govledger:authority"


@dataclass(frozen=True)
class Result:
    allow: bool
    determining: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass
class TablePolicy:
    """A test double for the Cedar bundle: (principal, action) -> result."""

    table: dict[tuple[str, str], Result] = field(default_factory=dict)
    digest: str = "sha256:" + "0" * 64
    raise_on: str | None = None

    def evaluate(self, principal: str, action: str, resource: str,
                 context: Mapping[str, object]) -> Result:
        if action == self.raise_on:
            raise RuntimeError("engine exploded")
        return self.table.get((principal, action), Result(False))


@dataclass
class CountingLimiter:
    budget: int = 1000

    def allow(self, identity: str, now: float) -> bool:
        self.budget -= 1
        return self.budget >= 0


def ring() -> KeyRing:
    return KeyRing([
        Principal("agent:alice", "acme", ALICE.public_key, frozenset({"requester"})),
        Principal("agent:bob", "acme", BOB.public_key, frozenset({"requester"})),
        Principal("runner:1", "acme", RUNNER.public_key, frozenset({"executor"})),
        Principal("ops:revoker", "acme", REVOKER.public_key, frozenset({"revoker"})),
        Principal(AUTH_ID, "*", AUTHORITY.public_key, frozenset({"authority"})),
    ])


def permissive() -> TablePolicy:
    table = {(who, act): Result(True, ("permit-" + act,))
             for who in ("agent:alice", "agent:bob") for act in ("read", "write", "delete")}
    table[("agent:alice", "delete")] = Result(False, ("forbid-delete",))
    return TablePolicy(table)


def engine(policy: TablePolicy | None = None, limiter: CountingLimiter | None = None) -> Engine:
    return Engine(authority=AUTHORITY, authority_identity=AUTH_ID, keyring=ring(),
                  policy=policy or permissive(),
                  limiter=limiter if limiter is not None else CountingLimiter(),
                  limits=Limits(max_depth=3))


def decision(outcome: Outcome) -> Event:
    out = outcome.outputs[0].value
    parsed = parse_envelope(out)
    return parse_payload(parsed.payload_type, parsed.payload)


def ask(eng: Engine, key: Signer = ALICE, now: datetime = T0, **kwargs: object) -> Outcome:
    return eng.handle(Stream.REQUESTS, sign_event(request(**kwargs), key), now)  # type: ignore[arg-type]


def grant_of(outcome: Outcome) -> tuple[str, bytes]:
    value = outcome.outputs[0].value
    return verify_envelope(value, ring(), T0).event_id, value


def child(eng: Engine, parent: Outcome, root: str, nonce: str, **kwargs: object) -> Outcome:
    parent_id, _ = grant_of(parent)
    return ask(eng, root=root, parent=parent_id, nonce=nonce, **kwargs)


def test_grant_carries_a_signed_artifact() -> None:
    eng = engine()
    out = ask(eng)
    assert out.allow is True
    grant = decision(out)
    assert isinstance(grant, AuthorizationGranted)
    art = grant.artifact
    assert art.initiator == "agent:alice" and art.lineage.depth == 0
    assert art.lineage.root == out.subject and art.policy_ids == ("permit-read",)
    assert out.outputs[0].key == out.subject.encode()  # keyed by lineage root


def test_redelivery_gets_the_same_bytes_not_replay() -> None:
    eng = engine()
    data = sign_event(request(), ALICE)
    first = eng.handle(Stream.REQUESTS, data, T0)
    again = eng.handle(Stream.REQUESTS, data, T0 + timedelta(seconds=3))
    assert again.replayed and again.outputs == first.outputs


def test_other_request_reusing_a_nonce_is_replay() -> None:
    eng = engine()
    ask(eng)
    out = ask(eng, resource="db/users/*")
    assert out.reasons == (Reason.REPLAY,)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"issued_at": T0 - timedelta(minutes=10)}, Reason.EXPIRED),
    ({"issued_at": T0 + timedelta(minutes=5)}, Reason.NOT_YET_VALID),
    ({"ttl": timedelta(days=2)}, Reason.TTL_TOO_LONG),
    ({"actions": ("delete",)}, Reason.POLICY_DENY),
    ({"actions": ("admin",)}, Reason.POLICY_DENY),
    ({"resource": "db/../etc/*"}, Reason.SCOPE_WIDENING),
    ({"root": "aa" * 32, "parent": "bb" * 32}, Reason.PARENT_UNKNOWN),
])
def test_request_denials(kwargs: dict[str, object], reason: Reason) -> None:
    out = ask(engine(), **kwargs)
    assert out.allow is False and out.reasons == (reason,)
    denial = decision(out)
    assert isinstance(denial, AuthorizationDenied) and denial.reasons == (reason,)
    assert denial.request_id == out.subject


def test_policy_error_is_a_denial() -> None:
    policy = permissive()
    policy.table[("agent:alice", "read")] = Result(True, ("permit-read",), ("boom",))
    assert ask(engine(policy)).reasons == (Reason.POLICY_DENY,)
    policy = permissive()
    policy.raise_on = "read"
    assert ask(engine(policy)).reasons == (Reason.POLICY_DENY,)


def test_rate_limited_after_budget() -> None:
    eng = engine(limiter=CountingLimiter(budget=1))
    assert ask(eng).allow
    assert ask(eng, nonce="nonce-0000000002").reasons == (Reason.RATE_LIMITED,)


def test_lineage_child_narrowing_granted_and_widening_denied() -> None:
    eng = engine()
    root = ask(eng, actions=("read", "write"), resource="db/*", environments=(ENV,))
    r = root.subject
    ok = child(eng, root, r, "nonce-child-0001", actions=("read",), resource="db/orders/*",
               ttl=timedelta(minutes=30))
    assert ok.allow, ok.reasons
    assert decision(ok).artifact.lineage.depth == 1  # type: ignore[attr-defined]
    wide = child(eng, root, r, "nonce-child-0002", actions=("delete", "read"), resource="db/*")
    assert wide.reasons == (Reason.SCOPE_WIDENING,)
    env = child(eng, root, r, "nonce-child-0003", environments=(ENV, ENV2), resource="db/*")
    assert env.reasons == (Reason.ENV_MISMATCH,)
    late = child(eng, root, r, "nonce-child-0004", resource="db/*", ttl=timedelta(hours=2))
    assert late.reasons == (Reason.SCOPE_WIDENING,)
    dots = child(eng, root, r, "nonce-child-0005", resource="db/orders/%2e%2e/%2e%2e/etc/*")
    assert dots.allow is False


def test_parent_of_another_root_or_tenant_is_unknown() -> None:
    eng = engine()
    root = ask(eng, resource="db/*")
    assert child(eng, root, "cc" * 32, "nonce-child-0001").reasons == (Reason.PARENT_UNKNOWN,)


def test_depth_limit() -> None:
    eng = engine()  # max_depth=3
    node = ask(eng, resource="db/*")
    r = node.subject
    for depth in range(1, 4):
        node = child(eng, node, r, f"nonce-depth-{depth:05d}", resource="db/*")
        assert node.allow, (depth, node.reasons)
    assert child(eng, node, r, "nonce-depth-99999", resource="db/*").reasons == (
        Reason.DEPTH_EXCEEDED,)


def test_parent_expired() -> None:
    eng = engine()
    root = ask(eng, resource="db/*", ttl=timedelta(minutes=1))
    late = child(eng, root, root.subject, "nonce-child-0001", resource="db/*",
                 now=T0 + timedelta(minutes=2), issued_at=T0 + timedelta(minutes=2),
                 ttl=timedelta(seconds=1))
    assert late.reasons == (Reason.PARENT_EXPIRED,)


def revoke(eng: Engine, target: Outcome, root: str, signer: Signer, identity: str,
           nonce: str) -> Outcome:
    artifact_id, _ = grant_of(target)
    event = AuthorizationRevoked(signer=identity, tenant="acme", nonce=nonce, issued_at=T0,
                                 artifact_id=artifact_id, root=root, reason="test")
    return eng.handle(Stream.REVOCATIONS, sign_event(event, signer), T0)


def execute(eng: Engine, target: Outcome, root: str, nonce: str, action: str = "read",
            resource: str = "db/orders/1", env: str = ENV, signer: Signer = RUNNER,
            identity: str = "runner:1", now: datetime = T0) -> Outcome:
    artifact_id, _ = grant_of(target)
    event = ExecutionRequested(signer=identity, tenant="acme", nonce=nonce, issued_at=now,
                               artifact_id=artifact_id, root=root, action=action,
                               resource=resource, environment=env)
    return eng.handle(Stream.EXECUTIONS, sign_event(event, signer), now)


def test_revocation_cascades_over_a_three_level_tree() -> None:
    eng = engine()
    root = ask(eng, resource="db/*")
    r = root.subject
    mid = child(eng, root, r, "nonce-child-0001", resource="db/*")
    leaf = child(eng, mid, r, "nonce-child-0002", resource="db/orders/*")
    assert execute(eng, leaf, r, "exec-nonce-00001").allow
    assert revoke(eng, mid, r, ALICE, "agent:alice", "revoke-nonce-0001").allow
    refused = execute(eng, leaf, r, "exec-nonce-00002")
    assert refused.reasons == (Reason.ARTIFACT_REVOKED,)
    assert isinstance(decision(refused), ExecutionRefused)
    assert execute(eng, root, r, "exec-nonce-00003").allow  # above the cut: still valid
    later = child(eng, leaf, r, "nonce-child-0003", resource="db/orders/*")
    assert later.reasons == (Reason.PARENT_REVOKED,)


def test_unauthorized_revocation_is_denied_and_changes_nothing() -> None:
    eng = engine()
    root = ask(eng, resource="db/*")
    out = revoke(eng, root, root.subject, BOB, "agent:bob", "revoke-nonce-0001")
    assert out.reasons == (Reason.POLICY_DENY,)
    assert execute(eng, root, root.subject, "exec-nonce-00001").allow
    assert revoke(eng, root, root.subject, REVOKER, "ops:revoker", "revoke-nonce-0002").allow
    assert execute(eng, root, root.subject, "exec-nonce-00002").reasons == (
        Reason.ARTIFACT_REVOKED,)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"action": "write"}, Reason.SCOPE_MISMATCH),
    ({"resource": "db/users/1"}, Reason.SCOPE_MISMATCH),
    ({"env": ENV2}, Reason.ENV_MISMATCH),
    ({"now": T0 + timedelta(hours=2)}, Reason.EXPIRED),
    ({"signer": BOB, "identity": "agent:bob"}, Reason.IDENTITY_MISMATCH),
])
def test_execution_refusals(kwargs: dict[str, object], reason: Reason) -> None:
    eng = engine()
    root = ask(eng)
    out = execute(eng, root, root.subject, "exec-nonce-00001", **kwargs)  # type: ignore[arg-type]
    assert out.reasons == (reason,)


def test_single_use_artifact() -> None:
    eng = engine()
    root = ask(eng, single_use=True)
    assert execute(eng, root, root.subject, "exec-nonce-00001").allow
    assert execute(eng, root, root.subject, "exec-nonce-00002").reasons == (
        Reason.ARTIFACT_CONSUMED,)


def test_poison_input_is_denied_and_dead_lettered() -> None:
    eng = engine()
    raw = b'{"payload": garbage'
    out = eng.handle(Stream.REQUESTS, raw, T0)
    streams = [o.stream for o in out.outputs]
    assert streams == [Stream.DECISIONS, Stream.DEADLETTER]
    denial = decision(out)
    assert isinstance(denial, AuthorizationDenied)
    assert denial.request_id == hashlib.sha256(raw).hexdigest()
    assert denial.reasons == (Reason.MALFORMED,)
    assert out.outputs[1].value == raw
    assert ask(eng).allow  # the next valid request is still decided


def test_restore_from_outcomes_reproduces_every_later_decision() -> None:
    """Feed a history to one engine, restore a second from its outcomes, then both must
    answer the same follow-ups identically (including revocation and single use)."""
    first = engine()
    history: list[tuple[Stream, bytes, datetime, Outcome]] = []

    def run(stream: Stream, raw: bytes, now: datetime = T0) -> Outcome:
        out = first.handle(stream, raw, now)
        history.append((stream, raw, now, out))
        return out

    root_out = run(Stream.REQUESTS, sign_event(request(resource="db/*", single_use=True), ALICE))
    r = root_out.subject
    root_id, _ = grant_of(root_out)
    kid = request(resource="db/orders/*", root=r, parent=root_id, nonce="nonce-child-0001")
    kid_out = run(Stream.REQUESTS, sign_event(kid, ALICE))
    kid_id, _ = grant_of(kid_out)
    run(Stream.REQUESTS, b"poison")
    exe = ExecutionRequested(signer="runner:1", tenant="acme", nonce="exec-nonce-00001",
                             issued_at=T0, artifact_id=root_id, root=r, action="read",
                             resource="db/x", environment=ENV)
    run(Stream.EXECUTIONS, sign_event(exe, RUNNER))
    rev = AuthorizationRevoked(signer="agent:alice", tenant="acme", nonce="revoke-nonce-0001",
                               issued_at=T0, artifact_id=kid_id, root=r)
    run(Stream.REVOCATIONS, sign_event(rev, ALICE))

    second = engine()
    for stream, raw, now, out in history:
        second.restore(stream, raw, now, json_round_trip(out))

    follow_ups = [
        (Stream.REQUESTS, sign_event(kid, ALICE)),                                   # redelivery
        (Stream.REQUESTS, sign_event(request(resource="db/y/*", nonce="nonce-child-0001",
                                             root=r, parent=root_id), ALICE)),       # replay
        (Stream.REQUESTS, sign_event(request(resource="db/orders/a/*", root=r, parent=kid_id,
                                             nonce="nonce-child-0002"), ALICE)),     # revoked
        (Stream.EXECUTIONS, sign_event(exe.model_copy(update={"nonce": "exec-nonce-00002"}),
                                       RUNNER)),                                     # used up
        (Stream.REQUESTS, b"poison"),
    ]
    for stream, raw in follow_ups:
        a, b = first.handle(stream, raw, T0), second.handle(stream, raw, T0)
        assert (a.allow, a.reasons, a.outputs) == (b.allow, b.reasons, b.outputs)
    assert [first.handle(s, r_, T0).reasons for s, r_ in follow_ups[1:4]] == [
        (Reason.REPLAY,), (Reason.PARENT_REVOKED,), (Reason.ARTIFACT_CONSUMED,)]


def restored(history: list[tuple[Stream, bytes, Outcome]]) -> Engine:
    fresh = engine()
    for stream, raw, out in history:
        fresh.restore(stream, raw, T0, json_round_trip(out))
    return fresh


def test_restore_gives_no_effect_to_input_that_failed_verification() -> None:
    """Bob's key signing a request that claims to be Alice's is refused on arrival, and its
    nonce is never remembered; a restart must not remember it either, or Alice's own request
    with that nonce would be refused as a REPLAY only because the processor restarted."""
    live = engine()
    forged = sign_event(request(nonce="nonce-stolen-0001"), BOB)
    wrong_stream = sign_event(request(nonce="nonce-stream-0001"), ALICE)
    history = [(Stream.REQUESTS, forged, live.handle(Stream.REQUESTS, forged, T0)),
               (Stream.EXECUTIONS, wrong_stream,
                live.handle(Stream.EXECUTIONS, wrong_stream, T0))]
    assert [out.reasons for *_, out in history] == [(Reason.IDENTITY_MISMATCH,),
                                                    (Reason.UNSUPPORTED_VERSION,)]
    after_restart = restored(history)
    for eng in (live, after_restart):
        assert ask(eng, nonce="nonce-stolen-0001", resource="db/users/*").allow
        assert ask(eng, nonce="nonce-stream-0001", resource="db/users/*").allow


def test_restore_refuses_a_grant_the_authority_did_not_sign() -> None:
    """A grant in the journal enters the lineage only under the authority's signature; one
    a requester signed (valid signature, own identity) stops the start, as does a grant whose
    signature was damaged: dropping it would let its revocation miss its children."""
    from ledger.errors import Unavailable
    live = engine()
    root = ask(live, resource="db/*")
    granted = decision(root)
    assert isinstance(granted, AuthorizationGranted)
    raw = sign_event(request(resource="db/*"), ALICE)
    fake = granted.model_copy(update={"signer": "agent:alice"})
    forged = replace(root, outputs=(replace(root.outputs[0], value=sign_event(fake, ALICE)),))
    with pytest.raises(Unavailable, match="does not verify under the authority key"):
        restored([(Stream.REQUESTS, raw, forged)])
    doc = json.loads(root.outputs[0].value)
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[0] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    damaged = replace(root, outputs=(replace(root.outputs[0], value=json.dumps(
        doc, separators=(",", ":")).encode()),))
    with pytest.raises(Unavailable, match="does not verify under the authority key"):
        restored([(Stream.REQUESTS, raw, damaged)])
    real = restored([(Stream.REQUESTS, raw, root)])
    assert ask(real, root=root.subject, parent=grant_of(root)[0], nonce="nonce-child-0009",
               resource="db/orders/*").allow


def test_restore_refuses_a_journal_that_contradicts_itself() -> None:
    """An allowed entry without its signed effect, or an effect on an artifact the journal
    never granted (a row removed), stops the start instead of restoring less."""
    from ledger.errors import Unavailable
    live = engine()
    raw = sign_event(request(resource="db/*"), ALICE)
    root = live.handle(Stream.REQUESTS, raw, T0)
    r, root_id = root.subject, grant_of(root)[0]
    exe_raw = sign_event(ExecutionRequested(
        signer="runner:1", tenant="acme", nonce="exec-nonce-00001", issued_at=T0,
        artifact_id=root_id, root=r, action="read", resource="db/x", environment=ENV), RUNNER)
    exe = live.handle(Stream.EXECUTIONS, exe_raw, T0)
    rev_raw = sign_event(AuthorizationRevoked(signer="agent:alice", tenant="acme",
                                              nonce="revoke-nonce-0001", issued_at=T0,
                                              artifact_id=root_id, root=r), ALICE)
    rev = live.handle(Stream.REVOCATIONS, rev_raw, T0)
    assert exe.allow and rev.allow
    with pytest.raises(Unavailable, match="holds no signed grant"):
        restored([(Stream.REQUESTS, raw, replace(root, outputs=()))])
    with pytest.raises(Unavailable, match="execution of unknown artifact"):
        restored([(Stream.EXECUTIONS, exe_raw, exe)])
    with pytest.raises(Unavailable, match="revokes unknown artifact"):
        restored([(Stream.REVOCATIONS, rev_raw, rev)])
    whole = restored([(Stream.REQUESTS, raw, root), (Stream.EXECUTIONS, exe_raw, exe),
                      (Stream.REVOCATIONS, rev_raw, rev)])
    assert whole.state.lineage.grants[root_id].uses == 1
    assert whole.state.lineage.is_revoked(root_id)


def test_restore_refuses_a_journal_entry_that_does_not_match_its_input() -> None:
    from ledger.errors import Unavailable
    live = engine()
    raw = sign_event(request(), ALICE)
    out = live.handle(Stream.REQUESTS, raw, T0)
    other = sign_event(request(nonce="nonce-other-0001"), ALICE)
    with pytest.raises(Unavailable, match="does not match its input"):
        restored([(Stream.REQUESTS, other, out)])


def test_a_nonce_free_again_after_expiry_is_taken_by_its_next_use() -> None:
    """Alice's nonce expires; a new request takes it; a third request with it is a REPLAY,
    both live (the stale entry was not pruned yet when the second one came) and after a
    restart (the restored memory still held the expired entry)."""
    nonce, later = "nonce-reused-0001", T0 + timedelta(minutes=10)
    for restart in (False, True):
        live = engine()
        first = sign_event(request(nonce=nonce), ALICE)
        history = [(Stream.REQUESTS, first, live.handle(Stream.REQUESTS, first, T0))]
        eng = restored(history) if restart else live
        second = ask(eng, now=later, nonce=nonce, issued_at=later, resource="db/users/*")
        third = ask(eng, now=later, nonce=nonce, issued_at=later, resource="db/orders/9/*")
        assert second.allow, (restart, second.reasons)
        assert third.reasons == (Reason.REPLAY,), restart


def test_a_timestamp_near_the_year_9999_is_a_denial_not_a_crash() -> None:
    far = datetime(9999, 12, 31, 23, 58, tzinfo=T0.tzinfo)
    eng = engine()
    assert ask(eng, nonce="nonce-far-000001", issued_at=far,
               ttl=timedelta(seconds=30)).reasons == (Reason.NOT_YET_VALID,)
    runner = sign_event(request(signer="runner:1", nonce="nonce-far-000002", issued_at=far,
                                ttl=timedelta(seconds=30)), RUNNER)
    assert eng.handle(Stream.REQUESTS, runner, T0).reasons == (Reason.POLICY_DENY,)


def test_restore_replays_the_rate_limiter() -> None:
    """The buckets after a restart are those the live run left: a request that was rate
    limited live is rate limited after a restart too (and one denied earlier in the checks
    took no token)."""
    from processors.core.ratelimit import TokenBucketLimiter

    def limited() -> Engine:
        return engine(limiter=TokenBucketLimiter(rate=0.01, burst=2))  # type: ignore[arg-type]
    live = limited()
    history = []
    for n, resource in enumerate(["db/a/*", "db/../b/*", "db/c/*", "db/d/*"]):
        raw = sign_event(request(nonce=f"nonce-limit-{n:06d}", resource=resource), ALICE)
        history.append((Stream.REQUESTS, raw, live.handle(Stream.REQUESTS, raw, T0)))
    assert [out.reasons for *_, out in history] == [
        (), (Reason.SCOPE_WIDENING,), (), (Reason.RATE_LIMITED,)]
    after = limited()
    for stream, raw, out in history:
        after.restore(stream, raw, T0, json_round_trip(out))
    for eng in (live, after):
        assert ask(eng, nonce="nonce-limit-000009", resource="db/e/*").reasons == (
            Reason.RATE_LIMITED,)
        assert ask(eng, nonce="nonce-limit-000010", resource="db/f/*",
                   now=T0 + timedelta(seconds=100)).allow


def json_round_trip(outcome: Outcome) -> Outcome:
    """What the journal stores and gives back (bytes and enums through JSON)."""
    from processors.journal import _decode_outputs, _encode_outputs
    return Outcome(outcome.subject, _decode_outputs(_encode_outputs(outcome.outputs)),
                   outcome.allow, tuple(Reason(r) for r in json.loads(
                       json.dumps([r.value for r in outcome.reasons]))))


def test_delegation_to_a_sub_agent_and_only_the_holder_delegates_further() -> None:
    eng = engine()
    root = ask(eng, resource="db/*")
    r = root.subject
    root_id, _ = grant_of(root)
    # alice delegates a narrower artifact to bob
    to_bob = ask(eng, root=r, parent=root_id, nonce="nonce-deleg-0001",
                 resource="db/orders/*", holder="agent:bob")
    assert to_bob.allow, to_bob.reasons
    art = decision(to_bob).artifact  # type: ignore[attr-defined]
    assert (art.initiator, art.holder) == ("agent:alice", "agent:bob")
    bob_id, _ = grant_of(to_bob)
    # alice may not delegate from bob's artifact; bob may
    assert ask(eng, root=r, parent=bob_id, nonce="nonce-deleg-0002",
               resource="db/orders/a/*").reasons == (Reason.IDENTITY_MISMATCH,)
    assert ask(eng, BOB, root=r, parent=bob_id, nonce="nonce-deleg-0003",
               signer="agent:bob", resource="db/orders/a/*").allow
    # bob runs under his artifact; alice (no executor role) may not
    assert execute(eng, to_bob, r, "exec-nonce-00001", signer=BOB, identity="agent:bob").allow
    assert execute(eng, to_bob, r, "exec-nonce-00002", signer=ALICE,
                   identity="agent:alice").reasons == (Reason.IDENTITY_MISMATCH,)


def test_holder_must_be_a_principal_of_the_tenant() -> None:
    assert ask(engine(), holder="agent:nobody").reasons == (Reason.IDENTITY_MISMATCH,)


def test_a_decision_that_cannot_be_built_is_a_denial_not_a_crash() -> None:
    eng = engine()
    from ledger.errors import InvalidEvent

    def explode(*args: object) -> object:
        raise InvalidEvent(Reason.OVERSIZED, "artifact too large")
    eng._request = explode  # type: ignore[method-assign,assignment]
    out = ask(eng)
    assert out.allow is False
    assert out.reasons == (Reason.OVERSIZED,)
    assert isinstance(decision(out), AuthorizationDenied)


def test_a_complete_cache_answers_misses_without_the_journal() -> None:
    """A worker that restored the whole journal sets ``complete``: misses are definitive and
    the journal is not asked; once anything is evicted, every miss asks the journal again."""
    asked: list[str] = []
    journaled: dict[str, Outcome] = {}

    def recall(subject: str) -> Outcome | None:
        asked.append(subject)
        return journaled.get(subject)

    eng = engine()
    eng.recall = recall
    first = ask(eng, nonce="nonce-complete-1")
    assert asked  # not complete: the journal was asked about the new input
    eng.state.complete = True
    asked.clear()
    ask(eng, nonce="nonce-complete-2")
    assert asked == []
    eng.state.max_cached = 4
    for n in range(4):
        ask(eng, nonce=f"nonce-complete-evict-{n}")
    assert eng.state.evicted and not eng.state.complete
    # an evicted decision is found in the journal again, so a redelivery is answered the same
    journaled[first.subject] = first
    assert first.subject not in eng.state.decided
    again = ask(eng, nonce="nonce-complete-1")
    assert again.replayed and again.outputs == first.outputs and asked
