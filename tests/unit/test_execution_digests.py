"""ExecutionCompleted / ExecutionFailed digests (written by the MCP gateway): absent from the
encoding when unset, so events logged before the fields existed keep their bytes and ids."""

from __future__ import annotations

import json

import pytest

from ledger.core.envelope import build_envelope, payload_bytes, payload_type, verify_envelope
from ledger.core.execution_events import ExecutionCompleted, ExecutionFailed
from ledger.errors import Reason, Rejected
from tests.factories import ALICE, T0, default_ring

COMMON = {"signer": "agent:alice", "tenant": "acme", "nonce": "digest-nonce-0001",
          "issued_at": T0, "artifact_id": "a" * 64, "root": "b" * 64, "execution_id": "c" * 64}
ARGS = "sha256:" + "1" * 64
RESULT = "sha256:" + "2" * 64


def test_unset_digests_are_absent_so_older_events_keep_their_bytes() -> None:
    completed = json.loads(payload_bytes(ExecutionCompleted(**COMMON)))  # type: ignore[arg-type]
    failed = json.loads(payload_bytes(ExecutionFailed(error="X", **COMMON)))  # type: ignore[arg-type]
    assert "arguments_digest" not in completed and completed["result_digest"] is None
    assert "arguments_digest" not in failed and "result_digest" not in failed


@pytest.mark.parametrize("event", [
    ExecutionCompleted(arguments_digest=ARGS, result_digest=RESULT, **COMMON),  # type: ignore[arg-type]
    ExecutionFailed(error="UpstreamTimeoutError", arguments_digest=ARGS, **COMMON),  # type: ignore[arg-type]
    ExecutionFailed(error="ToolReportedError", arguments_digest=ARGS, result_digest=RESULT,
                    **COMMON),  # type: ignore[arg-type]
])
def test_set_digests_are_signed_and_verify(event: ExecutionCompleted | ExecutionFailed) -> None:
    envelope = build_envelope(payload_type(event.KIND), payload_bytes(event), ALICE)
    assert verify_envelope(envelope, default_ring(), T0).event == event


def test_an_unset_digest_spelled_out_as_null_is_not_canonical() -> None:
    payload = json.loads(payload_bytes(ExecutionFailed(error="X", **COMMON)))  # type: ignore[arg-type]
    payload["arguments_digest"] = None
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    envelope = build_envelope(payload_type("ExecutionFailed"), raw, ALICE)
    with pytest.raises(Rejected) as caught:
        verify_envelope(envelope, default_ring(), T0)
    assert caught.value.reason is Reason.NON_CANONICAL
