"""The engine's bounds: memory kept for rejected input, and revocations of large subtrees."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest

from ledger.core.envelope import (
    parse_envelope,
    parse_payload,
    payload_bytes,
    sign_event,
    verify_envelope,
)
from ledger.core.events import (
    REVOKED_PER_EVENT,
    AuthorizationDenied,
    AuthorizationRevoked,
    RevocationApplied,
)
from ledger.core.streams import Stream
from ledger.errors import InvalidEvent, Reason
from processors.core.engine import Engine
from processors.core.outcomes import Outcome, cached_size
from tests.factories import ALICE, T0, request
from tests.unit.test_engine import (
    CountingLimiter,
    ask,
    engine,
    grant_of,
    json_round_trip,
    revoke,
    ring,
)

MB = 1024 * 1024


def distinct_bad_message(n: int, size: int) -> bytes:
    """``size`` bytes that are no envelope, different for each ``n``."""
    head = f'{{"payload":"{n:08d}'.encode()
    return head + b"A" * (size - len(head))


def retained(eng: Engine) -> int:
    """Bytes the engine keeps for decided outcomes: everything the cache's outputs hold."""
    return sum(len(o.key) + len(o.value) for outcome in eng.state.decided.values()
               for o in outcome.outputs)


def test_a_flood_of_large_distinct_bad_messages_keeps_about_one_denial_each() -> None:
    """Fifty distinct 4 MB messages: today the cache held each message (200 MB); now each
    costs one signed denial (about 1 KB), measured by what the cache holds and by the
    Python heap the flood leaves allocated (tracemalloc), not by RSS."""
    eng = engine()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(50):
            out = eng.handle(Stream.REQUESTS, distinct_bad_message(n, 4 * MB), T0)
            assert out.reasons == (Reason.OVERSIZED,)
            assert out.outputs[1].value[:20] == distinct_bad_message(n, 20)  # published whole
            del out
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(eng.state.decided) == 50
    assert retained(eng) < 50 * 2048
    assert after - before < 50 * 4096, f"the flood left {after - before} bytes allocated"


def test_a_redelivered_bad_message_gets_the_same_outputs_from_the_cache_and_the_journal(
        ) -> None:
    """Idempotence holds although the cache keeps no input: the dead letter is filled from
    the redelivered bytes, whose hash is the subject, so the outputs are the first ones."""
    eng = engine()
    raw = distinct_bad_message(1, 2 * MB)
    first = eng.handle(Stream.REQUESTS, raw, T0)
    assert [o.stream for o in first.outputs] == [Stream.DECISIONS, Stream.DEADLETTER]
    assert first.outputs[1].value == raw
    cached = eng.state.decided[first.subject]
    assert cached.outputs[1].value == b"" and cached.outputs[0] == first.outputs[0]
    again = eng.handle(Stream.REQUESTS, raw, T0)
    assert again.replayed and again.outputs == first.outputs
    # restored from the journal (as after a restart): same bytes again
    fresh = engine()
    fresh.restore(Stream.REQUESTS, raw, T0, json_round_trip(first))
    assert fresh.state.decided[first.subject].outputs[1].value == b""
    assert fresh.handle(Stream.REQUESTS, raw, T0).outputs == first.outputs
    # evicted, then recalled from the journal, which holds the input whole
    recalled = engine()
    recalled.recall = {first.subject: json_round_trip(first)}.get
    assert recalled.handle(Stream.REQUESTS, raw, T0).outputs == first.outputs


def test_the_decision_cache_is_bounded_by_bytes() -> None:
    """Past ``max_cached_bytes`` the older half goes (and misses ask the journal again)."""
    eng = engine()
    eng.state.max_cached_bytes = 40 * 1024
    for n in range(200):
        eng.handle(Stream.REQUESTS, distinct_bad_message(n, 1024), T0)
        assert eng.state.cached_bytes <= eng.state.max_cached_bytes
    assert eng.state.evicted and not eng.state.complete
    assert 0 < len(eng.state.decided) < 200
    assert eng.state.cached_bytes == sum(cached_size(s, o) for s, o in eng.state.decided.items())


def test_a_message_past_the_envelope_cap_is_refused_without_parsing_it() -> None:
    """16 MB is refused OVERSIZED at once (the length check comes before any parse)."""
    raw = b"{" * (16 * MB)   # would be MALFORMED (nesting) if it were parsed
    out = engine().handle(Stream.REQUESTS, raw, T0)
    denial = parse_envelope(out.outputs[0].value)
    event = parse_payload(denial.payload_type, denial.payload)
    assert isinstance(event, AuthorizationDenied)
    assert event.reasons == (Reason.OVERSIZED,)
    assert event.request_id == hashlib.sha256(raw).hexdigest()


def revocation_events(outcome: Outcome) -> list[RevocationApplied]:
    events = []
    for output in outcome.outputs:
        event = verify_envelope(output.value, ring(), T0).event
        assert isinstance(event, RevocationApplied)
        events.append(event)
    return events


History = list[tuple[Stream, bytes, Outcome]]


def wide_tree(eng: Engine, children: int) -> tuple[Outcome, list[str], History]:
    """A root grant and ``children`` child grants under it: the subtree's artifact ids, and
    the inputs with their outcomes (what the journal would hold)."""
    history: History = []

    def grant(**kwargs: object) -> Outcome:
        raw = sign_event(request(resource="db/*", **kwargs), ALICE)  # type: ignore[arg-type]
        out = eng.handle(Stream.REQUESTS, raw, T0)
        assert out.allow, out.reasons
        history.append((Stream.REQUESTS, raw, out))
        return out

    root = grant()
    root_id, _ = grant_of(root)
    ids = [root_id] + [grant_of(grant(root=root.subject, parent=root_id,
                                      nonce=f"nonce-wide-{n:06d}"))[0]
                       for n in range(children)]
    return root, ids, history


def test_revocation_of_a_1111_node_subtree_lists_every_node_in_chunks() -> None:
    eng = engine(limiter=CountingLimiter(10_000))
    root, ids, history = wide_tree(eng, 1110)
    artifact_id, _ = grant_of(root)
    revocation = sign_event(AuthorizationRevoked(
        signer="agent:alice", tenant="acme", nonce="revoke-nonce-wide1", issued_at=T0,
        artifact_id=artifact_id, root=root.subject, reason="test"), ALICE)
    out = eng.handle(Stream.REVOCATIONS, revocation, T0)
    assert out.allow
    events = revocation_events(out)
    assert [(e.chunk, e.chunks) for e in events] == [(0, 2), (1, 2)]
    listed = [i for e in events for i in e.revoked]
    assert set(listed) == set(ids) and len(listed) == 1111
    assert all(e.revocation_id == out.subject and e.artifact_id == ids[0] for e in events)
    assert len({e.nonce for e in events}) == 2
    assert all(o.key == root.subject.encode() for o in out.outputs)
    # a restart restores every chunk (each verified under the authority key) from the
    # one journal entry that holds them all
    fresh = engine(limiter=CountingLimiter(10_000))
    for stream, raw, outcome in [*history, (Stream.REVOCATIONS, revocation, out)]:
        fresh.restore(stream, raw, T0, json_round_trip(outcome))
    assert all(fresh.state.lineage.is_revoked(i) for i in ids)
    assert fresh.handle(Stream.REVOCATIONS, revocation, T0).outputs == out.outputs


def test_a_revocation_of_one_chunk_keeps_its_encoding_without_chunk_fields() -> None:
    """The bytes of every RevocationApplied of up to 1,000 artifacts are what they were:
    no ``chunk``/``chunks`` fields, and an explicit default is not canonical."""
    eng = engine()
    root = ask(eng, resource="db/*")
    out = revoke(eng, root, root.subject, ALICE, "agent:alice", "revoke-nonce-one01")
    (event,) = revocation_events(out)
    payload = payload_bytes(event)
    assert b'"chunk' not in payload and (event.chunk, event.chunks) == (0, 1)
    explicit = payload.replace(b'"issued_at"', b'"chunk":0,"chunks":1,"issued_at"')
    with pytest.raises(InvalidEvent) as caught:
        parse_payload("application/vnd.govledger.revocation-applied.v1+json", explicit)
    assert caught.value.reason is Reason.NON_CANONICAL


def test_a_chunk_index_past_the_count_is_malformed() -> None:
    with pytest.raises(ValueError, match="out of range"):
        RevocationApplied(signer="govledger:authority", tenant="acme",
                          nonce="r-" + "0" * 64, issued_at=T0, revocation_id="1" * 64,
                          artifact_id="2" * 64, root="3" * 64, revoked=("2" * 64,),
                          chunk=2, chunks=2)
    assert REVOKED_PER_EVENT == 1000
