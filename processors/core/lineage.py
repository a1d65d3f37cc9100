"""Lineage state: the tree of granted artifacts, revocations and single-use consumption.

Pure and deterministic: the processor applies events in partition order, and the same events
in the same order give the same state, which is how state is rebuilt after a restart
(DESIGN.md sections 5-6). Artifact ids are the event ids of the grants that carry them.

Rules (DESIGN.md section 5):

* only the holder of the parent artifact may request a child under it (IDENTITY_MISMATCH);
* a child's parent must be a granted artifact (PARENT_UNKNOWN), of the same tenant and
  lineage root (PARENT_UNKNOWN: it is not the parent *in this tree*), not revoked itself nor
  under a revoked ancestor (PARENT_REVOKED), and unexpired when the child is decided
  (PARENT_EXPIRED);
* the child's scope narrows the parent's: environments a subset (ENV_MISMATCH), actions a
  subset, resource contained, window inside (SCOPE_WIDENING);
* depth = parent depth + 1, at most ``max_depth`` (DEPTH_EXCEEDED);
* cycles cannot be built (a parent exists before its child, ids are content hashes), and the
  ancestor walk refuses a repeated id anyway (LINEAGE_CYCLE).

Revoking an artifact revokes its whole subtree: :meth:`LineageState.is_revoked` walks the
ancestors, so a child granted *after* an ancestor's revocation cannot exist (its request is
denied PARENT_REVOKED), and one granted before is covered by the walk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ledger.core.events import Artifact, AuthorizationRequested
from ledger.core.scope import ScopeSpec, scope_contains
from ledger.errors import Reason


@dataclass(slots=True)
class GrantRecord:
    """One granted artifact and what happened to it since."""

    artifact_id: str
    artifact: Artifact
    revoked_by: str | None = None        # event id of the revocation that named it
    uses: int = 0                        # executions allowed under it


@dataclass(slots=True)
class LineageState:
    """Every grant the processor made, by artifact id, with children and revocations."""

    grants: dict[str, GrantRecord] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    def add_grant(self, artifact_id: str, artifact: Artifact) -> None:
        """Record a grant (idempotent)."""
        if artifact_id in self.grants:
            return
        self.grants[artifact_id] = GrantRecord(artifact_id, artifact)
        if artifact.lineage.parent is not None:
            self.children.setdefault(artifact.lineage.parent, []).append(artifact_id)

    def ancestors(self, artifact_id: str) -> Iterator[GrantRecord]:
        """The artifact itself, then each ancestor up to the root grant.

        Stops at a missing link. Raises ValueError on a repeated id (a cycle).
        """
        seen: set[str] = set()
        current: str | None = artifact_id
        while current is not None:
            if current in seen:
                raise ValueError(f"lineage cycle at {current}")
            seen.add(current)
            record = self.grants.get(current)
            if record is None:
                return
            yield record
            current = record.artifact.lineage.parent

    def revoked_ancestor(self, artifact_id: str) -> str | None:
        """The id of the first revoked artifact on the path to the root, if any."""
        for record in self.ancestors(artifact_id):
            if record.revoked_by is not None:
                return record.artifact_id
        return None

    def is_revoked(self, artifact_id: str) -> bool:
        return self.revoked_ancestor(artifact_id) is not None

    def revoke(self, artifact_id: str, revocation_id: str) -> list[str]:
        """Revoke an artifact and report its whole subtree (ids, root first).

        Marks only the named artifact: descendants are revoked through the ancestor walk, so
        the cascade holds for children granted at any time. Idempotent.
        """
        record = self.grants.get(artifact_id)
        if record is None:
            return []
        if record.revoked_by is None:
            record.revoked_by = revocation_id
        return list(self.subtree(artifact_id))

    def subtree(self, artifact_id: str) -> Iterator[str]:
        stack = [artifact_id]
        while stack:
            current = stack.pop()
            yield current
            stack.extend(reversed(self.children.get(current, [])))

    def check_child(self, request: AuthorizationRequested, now: datetime,
                    max_depth: int) -> Reason | None:
        """Lineage checks for a request that names a parent (module docstring for the rules)."""
        parent_id, root = request.lineage.parent, request.lineage.root
        if parent_id is None:
            return None
        parent = self.grants.get(parent_id)
        if parent is None:
            return Reason.PARENT_UNKNOWN
        art = parent.artifact
        if art.lineage.root != root or art.tenant != request.tenant:
            return Reason.PARENT_UNKNOWN
        if request.signer != art.holder:
            return Reason.IDENTITY_MISMATCH  # only the parent's holder may delegate from it
        try:
            if self.is_revoked(parent_id):
                return Reason.PARENT_REVOKED
        except ValueError:
            return Reason.LINEAGE_CYCLE
        if now >= art.window.not_after:
            return Reason.PARENT_EXPIRED
        if not set(request.environments) <= set(art.environments):
            return Reason.ENV_MISMATCH
        parent_scope = ScopeSpec(frozenset(art.scope.actions), art.scope.resource,
                                 art.window.not_before, art.window.not_after,
                                 frozenset(art.environments))
        child_scope = ScopeSpec(frozenset(request.scope.actions), request.scope.resource,
                                request.window.not_before, request.window.not_after,
                                frozenset(request.environments))
        if (reason := scope_contains(parent_scope, child_scope)) is not None:
            return reason
        if art.lineage.depth + 1 > max_depth:
            return Reason.DEPTH_EXCEEDED
        return None

    def depth_of_child(self, parent_id: str | None) -> int:
        if parent_id is None:
            return 0
        return self.grants[parent_id].artifact.lineage.depth + 1
