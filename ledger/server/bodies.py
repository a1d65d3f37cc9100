"""Response bodies of the HTTP API: the OpenAPI contract (schemathesis checks every response
against these models), and the summary of a decision envelope the API serves.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ledger.core.envelope import event_id as envelope_event_id
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.core.kinds import answer_of
from ledger.errors import Rejected
from ledger.server.http_errors import ApiError


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Body):
    reason: str
    detail: str


class SubmittedBody(_Body):
    event_id: str
    kind: str
    topic: str


class DecisionBody(_Body):
    """``envelope`` is the decision envelope text exactly as signed; verify it yourself."""

    envelope: str
    event_id: str
    kind: str
    allow: bool
    reasons: list[str]


class SubmittedAndDecidedBody(SubmittedBody):
    """``POST /v1/events?wait=S`` when the decision came within the wait (else the 202
    body alone: look for it at GET /v1/decisions/{event_id})."""

    decision: DecisionBody


class EntryBody(_Body):
    index: int
    event_id: str
    leaf: str
    leaf_hash: str


class InclusionBundle(_Body):
    origin: str
    index: int
    tree_size: int
    leaf: str
    leaf_hash: str
    proof: list[str]
    root_hash: str
    checkpoint: str


class ConsistencyBundle(_Body):
    origin: str
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]
    old_checkpoint: str
    new_checkpoint: str


class LineageHop(_Body):
    event_id: str
    index: int
    leaf: str
    leaf_hash: str
    proof: list[str]


class LineageBundle(_Body):
    format: str
    origin: str
    event_id: str
    tree_size: int
    root_hash: str
    checkpoint: str
    hops: list[LineageHop]


def errors_doc(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries: an ErrorBody for each status."""
    return {status: {"model": ErrorBody} for status in statuses}


def text_doc(description: str) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entry of a text/plain 200."""
    return {200: {"description": description,
                  "content": {"text/plain": {"schema": {"type": "string"}}}}}


def summarize_decision(subject_id: str, data: bytes) -> DecisionBody:
    """Summary fields of a decision envelope about ``subject_id``. The signature is not
    checked here. Raises ApiError(500) if the bytes are not a decision about that subject."""
    try:
        parsed = parse_envelope(data)
        event = parse_payload(parsed.payload_type, parsed.payload)
        text = data.decode("utf-8")
    except (Rejected, UnicodeDecodeError) as exc:
        raise ApiError(500, "INTERNAL", f"backend returned an unreadable decision: {exc}") from exc
    answer = answer_of(event)
    if answer is None:
        raise ApiError(500, "INTERNAL", f"backend returned a {event.KIND}, not a decision")
    subject, allow, reasons = answer
    if subject != subject_id:
        raise ApiError(500, "INTERNAL", "backend returned a decision about another subject")
    return DecisionBody(envelope=text, event_id=envelope_event_id(parsed.payload),
                        kind=event.KIND, allow=allow, reasons=[r.value for r in reasons])
