"""The logical streams (DESIGN.md section 1), in one list: which exist, which the ledger logs,
which the processor consumes, and which input stream each event kind travels on.

Topic names (a configured prefix + the stream) are the shell's: ``ledger.kafka.topics``.
"""

from __future__ import annotations

from enum import StrEnum

from ledger.core.approval_events import APPROVAL_ANSWERS
from ledger.core.events import AuthorizationRequested, AuthorizationRevoked, Event
from ledger.core.execution_events import ExecutionCompleted, ExecutionFailed, ExecutionRequested
from ledger.core.governance_events import GOVERNANCE_TYPES


class Stream(StrEnum):
    """Logical streams, in flow order (the shell adds the configured topic prefix)."""

    GOVERNANCE = "governance"
    REQUESTS = "requests"
    DECISIONS = "decisions"
    REVOCATIONS = "revocations"
    EXECUTIONS = "executions"
    VERDICTS = "verdicts"
    ALERTS = "alerts"
    DEADLETTER = "deadletter"


#: What the processor consumes and decides on. Governance comes first: within a batch the
#: worker applies governance events before the requests that arrived with them.
INPUT_STREAMS = (Stream.GOVERNANCE, Stream.REQUESTS, Stream.REVOCATIONS, Stream.EXECUTIONS)

#: The inputs keyed by lineage root (a tree is decided on one partition).
TREE_STREAMS = (Stream.REQUESTS, Stream.REVOCATIONS, Stream.EXECUTIONS)

#: Streams on one partition: one order every worker sees.
SINGLE_PARTITION_STREAMS = (Stream.GOVERNANCE,)

#: What the sequencer appends to the ledger: every stream but the dead letters (their bytes
#: are unauthenticated; the signed denial naming their hash is logged).
LOGGED_STREAMS = tuple(s for s in Stream if s is not Stream.DEADLETTER)

#: The inputs the processor decides (one decision each), and the stream each goes on.
DECIDED_STREAM_OF: dict[type[Event], Stream] = {
    AuthorizationRequested: Stream.REQUESTS, AuthorizationRevoked: Stream.REVOCATIONS,
    ExecutionRequested: Stream.EXECUTIONS,
    **dict.fromkeys(GOVERNANCE_TYPES, Stream.GOVERNANCE),
    # Approvals travel with the request they answer, keyed by its lineage root, so the
    # worker that holds the pending request decides them in order with its tree.
    **dict.fromkeys(APPROVAL_ANSWERS, Stream.REQUESTS)}

#: Every kind a client may submit, and its input stream: the decided ones, and the
#: execution reports the ledger records (nothing to decide).
INPUT_STREAM_OF: dict[type[Event], Stream] = {
    **DECIDED_STREAM_OF, ExecutionCompleted: Stream.EXECUTIONS,
    ExecutionFailed: Stream.EXECUTIONS}
