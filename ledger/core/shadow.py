"""Shadow-mode agreement (docs/governance.md, issue 13 item 5): how often a policy published in
``shadow`` mode would have decided as the enforced one did, by policy id. Pure: the shell
feeds it decisions (``/metrics`` live, ``govledger policy shadow-report`` from the ledger).

A decision that reached the policy while a shadow policy was published carries the shadow's
outcome (:class:`~ledger.core.events.Shadow`: its digest, allow, determining policy ids). It
*agrees* when the shadow's allow equals the decision's (a grant allows, a denial does not). It
counts under every policy id that determined either outcome: the enforced decision's and the
shadow's, so a rule that only the shadow has shows up with the disagreements it causes. A
decision no policy determined (Cedar's default deny on both sides) counts under
:data:`NO_POLICY`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event

NO_POLICY = "(default)"
"""The policy id label of a decision no policy determined (Cedar's default deny)."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """One decision's shadow outcome: the shadow policy's digest, whether it agrees, and the
    policy ids it counts under."""

    shadow_digest: str
    agrees: bool
    policy_ids: tuple[str, ...]


def agreement(event: Event) -> Agreement | None:
    """The shadow outcome of a grant or denial that carries one; None for anything else."""
    if not isinstance(event, AuthorizationGranted | AuthorizationDenied) or event.shadow is None:
        return None
    shadow = event.shadow
    allowed = isinstance(event, AuthorizationGranted)
    enforced = (event.artifact.policy_ids if isinstance(event, AuthorizationGranted)
                else event.policy_ids)
    ids = tuple(sorted(set(enforced) | set(shadow.policy_ids))) or (NO_POLICY,)
    return Agreement(shadow.policy_digest, shadow.allow == allowed, ids)


@dataclass(slots=True)
class Counts:
    agree: int = 0
    disagree: int = 0


@dataclass(slots=True)
class ShadowTally:
    """Agreements and disagreements per shadow policy digest, overall and per policy id."""

    totals: dict[str, Counts] = field(default_factory=dict)
    by_policy: dict[str, dict[str, Counts]] = field(default_factory=dict)

    def add(self, found: Agreement) -> None:
        total = self.totals.setdefault(found.shadow_digest, Counts())
        per_policy = self.by_policy.setdefault(found.shadow_digest, {})
        for counts in (total, *(per_policy.setdefault(p, Counts()) for p in found.policy_ids)):
            if found.agrees:
                counts.agree += 1
            else:
                counts.disagree += 1

    def add_all(self, events: Iterable[Event]) -> ShadowTally:
        for event in events:
            if (found := agreement(event)) is not None:
                self.add(found)
        return self

    def rows(self) -> Iterator[tuple[str, str, Counts]]:
        """``(shadow digest, policy id, counts)``, the most disagreements first."""
        for digest in sorted(self.by_policy):
            per_policy = self.by_policy[digest]
            for policy_id in sorted(per_policy, key=lambda p: (-per_policy[p].disagree, p)):
                yield digest, policy_id, per_policy[policy_id]

    def summary(self) -> Mapping[str, object]:
        """The tally as JSON-ready data."""
        return {"shadow_policies": [
            {"digest": digest, "agree": total.agree, "disagree": total.disagree,
             "policies": [{"policy_id": p, "agree": c.agree, "disagree": c.disagree}
                          for d, p, c in self.rows() if d == digest]}
            for digest, total in sorted(self.totals.items())]}
