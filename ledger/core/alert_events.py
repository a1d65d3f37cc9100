"""The monitor's alerts (processors/monitor): signed by the authority like every decision,
sequenced into the ledger like every event (docs/monitor.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from ledger.core.events import Detail, Event, EventId, Identity, Window, _sorted_unique

AlertRule = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,63}$")]


class AlertRaised(Event):
    """A detective finding of the monitor (processors/monitor): ``rule`` fired on the events
    ``evidence`` (sorted ids), within ``window`` for windowed rules. ``alert_id`` is derived
    from the rule and its evidence, so a restarted monitor raises the same alert, never a new
    one. ``proposed_suspension`` names a principal an operator may suspend: a proposal,
    never applied by the monitor."""

    KIND = "AlertRaised"
    SLUG = "alert-raised"
    kind: Literal["AlertRaised"] = "AlertRaised"
    alert_id: EventId
    rule: AlertRule
    subject: Identity | None = None
    root: EventId | None = None
    evidence: Annotated[tuple[EventId, ...], Field(min_length=1, max_length=64)]
    window: Window | None = None
    detail: Detail = ""
    proposed_suspension: Identity | None = None

    @model_validator(mode="after")
    def _canonical_evidence(self) -> AlertRaised:
        _sorted_unique(self.evidence, "evidence")
        return self

    def lineage_root(self) -> str | None:
        return self.root
