"""Event models: one frozen pydantic model per event kind, version 1.

Every event is a past-tense fact signed by the identity it names (``signer``), within a
``tenant``, with a ``nonce`` and ``issued_at``. Ids are content hashes: an event id is the
SHA-256 of the exact payload bytes, and an *artifact id* is the event id of the grant that
carries the artifact. References between events are event ids, so the lineage chain of any
event can be walked back with :meth:`Event.parent_ref`::

    ExecutionCompleted -> ExecutionRequested -> AuthorizationGranted (the artifact)
      -> AuthorizationRequested -> parent AuthorizationGranted -> ... -> root request

The *lineage root* of a tree is the event id of its root AuthorizationRequested; every
lineage-bound event carries it (a root request carries ``null`` and is its own root), and it is
the Kafka partition key, so one tree is decided in order by one worker.

Times are UTC with an explicit ``Z`` offset. The payload of an envelope must be exactly the
RFC 8785 encoding of its model's JSON form (``model_dump(mode="json")``), so one event has
one byte encoding and one id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from ledger.errors import Reason


def _require_utc(value: datetime) -> datetime:
    if value.utcoffset() is None or value.utcoffset() != UTC.utcoffset(None):
        raise ValueError("time must be UTC with an explicit offset")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, microseconds only when non-zero."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


UtcTime = Annotated[datetime, AfterValidator(_require_utc), PlainSerializer(format_time)]
Identity = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")]
TENANT_PATTERN = r"^(\*|[a-z0-9][a-z0-9._-]{0,63})$"
Tenant = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]
Nonce = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]
EventId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_DIGEST = r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$"
Digest = Annotated[str, StringConstraints(pattern=_DIGEST)]
ActionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
ResourcePattern = Annotated[str, StringConstraints(min_length=1, max_length=512)]
PolicyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
MetaKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
MetaValue = Annotated[str, StringConstraints(max_length=256)] | int | bool
Metadata = Annotated[dict[MetaKey, MetaValue], Field(max_length=32)]
Detail = Annotated[str, StringConstraints(max_length=512)]

MAX_LINEAGE_DEPTH = 64
# Artifact ids one RevocationApplied lists (about 67 KB of its 128 KB payload cap); a larger
# subtree is listed in several chunks.
REVOKED_PER_EVENT = 1000


def _sorted_unique(values: tuple[str, ...], what: str) -> None:
    if list(values) != sorted(set(values)):
        raise ValueError(f"{what} must be sorted and without duplicates")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Scope(_Model):
    """What may be done: actions (sorted, unique) on a resource pattern."""

    actions: Annotated[tuple[ActionName, ...], Field(min_length=1, max_length=32)]
    resource: ResourcePattern

    @model_validator(mode="after")
    def _canonical_actions(self) -> Scope:
        _sorted_unique(self.actions, "actions")
        return self


class Window(_Model):
    """Validity window: inclusive ``not_before``, exclusive ``not_after``."""

    not_before: UtcTime
    not_after: UtcTime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")
        return self


class LineageRef(_Model):
    """A request's place in a tree: both null for a root request, both set for a child."""

    root: EventId | None = None
    parent: EventId | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> LineageRef:
        if (self.root is None) != (self.parent is None):
            raise ValueError("lineage root and parent are both set or both null")
        return self


class Lineage(_Model):
    """An artifact's place in its tree. ``parent`` is the parent artifact id (grant event id)."""

    root: EventId
    parent: EventId | None
    depth: Annotated[int, Field(ge=0, le=MAX_LINEAGE_DEPTH)]


Environments = Annotated[tuple[Digest, ...], Field(min_length=1, max_length=16)]


class Artifact(_Model):
    """The authorization an executor holds (DESIGN.md section 4), inside a signed grant."""

    request_id: EventId
    initiator: Identity
    holder: Identity
    tenant: Tenant
    scope: Scope
    environments: Environments
    window: Window
    single_use: bool
    policy_digest: Digest
    policy_ids: Annotated[tuple[PolicyId, ...], Field(max_length=64)]
    lineage: Lineage
    governance: Metadata

    @model_validator(mode="after")
    def _canonical_sets(self) -> Artifact:
        _sorted_unique(self.environments, "environments")
        return self


class Event(_Model):
    """Fields every signed event carries."""

    KIND: ClassVar[str]
    SLUG: ClassVar[str]

    signer: Identity
    tenant: Tenant
    nonce: Nonce
    issued_at: UtcTime

    # Fields added after version 1: absent from the encoding while None, so an event that
    # does not use them has the bytes (and the id) it had before they existed.
    _OMIT_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self._omitted(data):
            del data[name]
        return data

    def _omitted(self, data: dict[str, Any]) -> list[str]:
        """The keys of ``data`` the encoding leaves out (:data:`_OMIT_WHEN_NONE`)."""
        return [name for name in self._OMIT_WHEN_NONE if data.get(name, 0) is None]

    def parent_ref(self) -> str | None:
        """The event id this event points back to on its lineage chain, if any."""
        return None

    def lineage_root(self) -> str | None:
        """The lineage root this event belongs to (None: not lineage-bound, or a root request)."""
        return None


class Shadow(_Model):
    """What the shadow policy (published in ``shadow`` mode, not enforced) said about the
    same request: its digest, its outcome and its determining policies."""

    policy_digest: Digest
    allow: bool
    policy_ids: Annotated[tuple[PolicyId, ...], Field(max_length=64)] = ()


class AuthorityDecision(Event):
    """An authority decision. ``governance`` is the governance position it was decided
    under (how many governance events the processor had applied: ledger.core.governance),
    so "which keys and which policy decided this" is a signed field. ``shadow``: the shadow
    policy's outcome, on decisions that reached the policy while one was published. Both
    are absent from the encoding when None (decisions signed before they existed keep their
    bytes).
    """

    governance: Annotated[int, Field(ge=0)] | None = None
    shadow: Shadow | None = None

    _OMIT_WHEN_NONE: ClassVar[tuple[str, ...]] = ("governance", "shadow")


class AuthorizationRequested(Event):
    """A request for an artifact. ``holder`` is who will hold it (default: the signer), so a
    holder can delegate a narrowed child artifact to a sub-agent; only the holder of a parent
    artifact may request children under it."""

    KIND = "AuthorizationRequested"
    SLUG = "authorization-requested"
    kind: Literal["AuthorizationRequested"] = "AuthorizationRequested"
    holder: Identity | None = None
    scope: Scope
    environments: Environments
    window: Window
    lineage: LineageRef = LineageRef()
    single_use: bool = False
    context: Metadata = Field(default_factory=dict)

    @model_validator(mode="after")
    def _canonical_sets(self) -> AuthorizationRequested:
        _sorted_unique(self.environments, "environments")
        return self

    def parent_ref(self) -> str | None:
        return self.lineage.parent

    def lineage_root(self) -> str | None:
        return self.lineage.root

    @property
    def holder_identity(self) -> str:
        return self.holder or self.signer


class AuthorizationGranted(AuthorityDecision):
    KIND = "AuthorizationGranted"
    SLUG = "authorization-granted"
    kind: Literal["AuthorizationGranted"] = "AuthorizationGranted"
    request_id: EventId
    artifact: Artifact

    def parent_ref(self) -> str | None:
        return self.request_id

    def lineage_root(self) -> str | None:
        return self.artifact.lineage.root


Reasons = Annotated[tuple[Reason, ...], Field(min_length=1, max_length=8)]


class AuthorizationDenied(AuthorityDecision):
    """A denial of ``request_id``: a request, a revocation, or (for input that could not be
    authenticated) the SHA-256 of the raw input bytes."""

    KIND = "AuthorizationDenied"
    SLUG = "authorization-denied"
    kind: Literal["AuthorizationDenied"] = "AuthorizationDenied"
    request_id: EventId
    reasons: Reasons
    detail: Detail = ""
    root: EventId | None = None
    policy_digest: Digest | None = None
    policy_ids: Annotated[tuple[PolicyId, ...], Field(max_length=64)] = ()

    def parent_ref(self) -> str | None:
        return self.request_id

    def lineage_root(self) -> str | None:
        return self.root


class AuthorizationRevoked(Event):
    KIND = "AuthorizationRevoked"
    SLUG = "authorization-revoked"
    kind: Literal["AuthorizationRevoked"] = "AuthorizationRevoked"
    artifact_id: EventId
    root: EventId
    reason: Detail = ""

    def parent_ref(self) -> str | None:
        return self.artifact_id

    def lineage_root(self) -> str | None:
        return self.root


class RevocationApplied(AuthorityDecision):
    """The authority applied ``revocation_id``: ``artifact_id`` and every descendant known at
    that moment (``revoked``, root first; descendants granted later are refused anyway).

    A subtree of more than 1,000 artifacts is listed in ``chunks`` events, chunk ``chunk``
    (from 0) listing the next 1,000 ids; the union of their ``revoked`` is the subtree. Both
    fields are absent from the encoding of a one-chunk event, so its bytes are what they
    were before chunking existed (and an explicit ``"chunk":0,"chunks":1`` is not canonical).
    """

    KIND = "RevocationApplied"
    SLUG = "revocation-applied"
    kind: Literal["RevocationApplied"] = "RevocationApplied"
    revocation_id: EventId
    artifact_id: EventId
    root: EventId
    revoked: Annotated[tuple[EventId, ...], Field(min_length=1, max_length=REVOKED_PER_EVENT)]
    chunk: Annotated[int, Field(ge=0)] = 0
    chunks: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _chunk_in_range(self) -> RevocationApplied:
        if self.chunk >= self.chunks:
            raise ValueError(f"chunk {self.chunk} of {self.chunks} is out of range")
        return self


    def _omitted(self, data: dict[str, Any]) -> list[str]:
        single = ["chunk", "chunks"] if self.chunks == 1 else []
        return super()._omitted(data) + single

    def parent_ref(self) -> str | None:
        return self.revocation_id

    def lineage_root(self) -> str | None:
        return self.root
