"""The execution events (version 1): an executor's request to run an action under an
artifact, the authority's verdict on it, and the executor's report of how it went. Each
refers to its artifact (``artifact_id``) and carries the lineage root of its tree; the
verdicts and reports refer to the execution request (``execution_id``), so the chain
``ExecutionCompleted -> ExecutionRequested -> AuthorizationGranted`` walks back by
:meth:`~ledger.core.events.Event.parent_ref`. The shared types and the other kinds are in
:mod:`ledger.core.events`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from ledger.core.events import (
    ActionName,
    AuthorityDecision,
    Detail,
    Digest,
    Event,
    EventId,
    Reasons,
    ResourcePattern,
)


class _UnderArtifact(Event):
    artifact_id: EventId
    root: EventId

    def lineage_root(self) -> str | None:
        return self.root


class ExecutionRequested(_UnderArtifact):
    """An executor asks to run ``action`` on ``resource`` in the measured ``environment``."""

    KIND = "ExecutionRequested"
    SLUG = "execution-requested"
    kind: Literal["ExecutionRequested"] = "ExecutionRequested"
    action: ActionName
    resource: ResourcePattern
    environment: Digest

    def parent_ref(self) -> str | None:
        return self.artifact_id


class _AboutExecution(_UnderArtifact):
    execution_id: EventId

    def parent_ref(self) -> str | None:
        return self.execution_id


class _Verdict(_AboutExecution, AuthorityDecision):
    """The authority's verdict on an execution request."""


class ExecutionAllowed(_Verdict):
    KIND = "ExecutionAllowed"
    SLUG = "execution-allowed"
    kind: Literal["ExecutionAllowed"] = "ExecutionAllowed"


class ExecutionRefused(_Verdict):
    KIND = "ExecutionRefused"
    SLUG = "execution-refused"
    kind: Literal["ExecutionRefused"] = "ExecutionRefused"
    reasons: Reasons
    detail: Detail = ""


class _Reported(_AboutExecution):
    """An execution's outcome. ``arguments_digest`` (what the executor ran it with, e.g. the
    RFC 8785 bytes of an MCP tool call's arguments) is absent from the encoding when None,
    so the bytes of events that never carried it are what they were before it existed."""

    arguments_digest: Digest | None = None

    _OMIT_WHEN_NONE: ClassVar[tuple[str, ...]] = ("arguments_digest",)


class ExecutionCompleted(_Reported):
    KIND = "ExecutionCompleted"
    SLUG = "execution-completed"
    kind: Literal["ExecutionCompleted"] = "ExecutionCompleted"
    result_digest: Digest | None = None


class ExecutionFailed(_Reported):
    """``result_digest``: of what the failed execution returned, if anything (an MCP tool
    result flagged as an error); absent from the encoding when None."""

    KIND = "ExecutionFailed"
    SLUG = "execution-failed"
    kind: Literal["ExecutionFailed"] = "ExecutionFailed"
    error: Detail
    result_digest: Digest | None = None

    _OMIT_WHEN_NONE: ClassVar[tuple[str, ...]] = ("arguments_digest", "result_digest")
