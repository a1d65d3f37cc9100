"""The monitor's detective rules (issue 18): verified events in, alerts out, time an argument.

The decision worker *prevents*; these rules *detect*, after the fact, what got past it or
looks like an attack. :class:`MonitorState` folds verified events (``observe``) into windowed
tables keyed by lineage root (grants, executions and their reports), principal and tenant
(denial counts per tumbling window), and ``tick(now)`` judges what only time can tell.

The rules (:data:`RULES`):

* ``execution-without-allowance``: an ExecutionCompleted / ExecutionFailed whose execution has
  no ExecutionAllowed, or whose allowance names another artifact (something ran past the
  gate, or reported against the wrong artifact).
* ``execution-after-revocation``, ``execution-outside-window``, ``execution-out-of-scope``:
  the execution (as its ExecutionRequested names it) started after its artifact's revocation
  took effect, outside the artifact's window, or for an action / resource it does not cover.
* ``allowance-without-report``: an ExecutionAllowed with no completion or failure within
  ``silent_after`` (a hung or silent executor).
* ``denial-burst``: ``burst_threshold[class]`` denials of one reason class (signature,
  replay, ...) for one principal, or one tenant, in one tumbling window.

Reports are judged ``report_grace`` after they are noticed, not at once: the allowance, grant
and revocation they are judged against travel on other topics, which a consumer reads in no
fixed order with the report. Expired unused grants are a report (:meth:`unused_grants`).

Determinism is the restart guarantee: an alert's id is a hash of its rule and what it is
about (the evidence ids, or the window and key of a burst), and its ``at`` comes from the
events, so a monitor that rebuilds from the ledger raises byte-identical alerts and skips
those already raised (``raised``). An alert storm is bounded per rule and subject per
``storm_window`` (the excess is counted in ``suppressed``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ledger.core.alert_events import AlertRaised
from ledger.core.events import (
    Artifact,
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRequested,
    AuthorizationRevoked,
    Event,
    RevocationApplied,
)
from ledger.core.execution_events import (
    ExecutionAllowed,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRefused,
    ExecutionRequested,
)
from ledger.core.scope import matches
from ledger.errors import Reason, Rejected

UNALLOWED = "execution-without-allowance"
AFTER_REVOCATION = "execution-after-revocation"
OUTSIDE_WINDOW = "execution-outside-window"
OUT_OF_SCOPE = "execution-out-of-scope"
SILENT = "allowance-without-report"
DENIAL_BURST = "denial-burst"
RULES = (UNALLOWED, AFTER_REVOCATION, OUTSIDE_WINDOW, OUT_OF_SCOPE, SILENT, DENIAL_BURST)

_CLASS_OF: dict[Reason, str] = {
    **dict.fromkeys((Reason.MALFORMED, Reason.NON_CANONICAL, Reason.OVERSIZED,
                     Reason.UNSUPPORTED_VERSION), "malformed"),
    **dict.fromkeys((Reason.SIGNATURE_MISSING, Reason.SIGNATURE_INVALID, Reason.KEY_UNKNOWN,
                     Reason.KEY_REVOKED, Reason.KEY_WEAK, Reason.IDENTITY_MISMATCH,
                     Reason.TENANT_MISMATCH, Reason.ARTIFACT_INVALID), "signature"),
    Reason.REPLAY: "replay", Reason.ARTIFACT_CONSUMED: "replay",
    **dict.fromkeys((Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.TTL_TOO_LONG), "time"),
    **dict.fromkeys((Reason.PARENT_UNKNOWN, Reason.PARENT_REVOKED, Reason.PARENT_EXPIRED,
                     Reason.SCOPE_WIDENING, Reason.LINEAGE_CYCLE, Reason.DEPTH_EXCEEDED,
                     Reason.ARTIFACT_REVOKED, Reason.ARTIFACT_NOT_LOGGED), "lineage"),
    **dict.fromkeys((Reason.POLICY_DENY, Reason.SCOPE_MISMATCH, Reason.ENV_MISMATCH), "policy"),
    Reason.RATE_LIMITED: "rate", Reason.UNAVAILABLE: "unavailable",
}
REASON_CLASSES = tuple(sorted(set(_CLASS_OF.values())))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EVIDENCE = 64


def reason_class(reason: Reason) -> str:
    """The class a denial reason counts under in the burst rule."""
    return _CLASS_OF.get(reason, "other")


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """Bounds and thresholds (``govledger monitor`` takes them from Settings)."""

    report_grace: timedelta = timedelta(seconds=5)
    silent_after: timedelta = timedelta(minutes=5)
    burst_window: timedelta = timedelta(minutes=1)
    burst_threshold: dict[str, int] = field(default_factory=lambda: {
        "signature": 5, "replay": 5, "malformed": 20, "other": 50})
    default_threshold: int = 20
    storm_limit: int = 10
    storm_window: timedelta = timedelta(minutes=1)
    horizon: timedelta = timedelta(days=1)

    def threshold(self, klass: str) -> int:
        return max(1, self.burst_threshold.get(klass, self.default_threshold))


@dataclass(frozen=True, slots=True)
class Alert:
    """One finding. ``at`` is taken from the evidence (never the monitor's clock) so a
    re-raised alert is the same bytes; ``alert_id`` hashes the rule and ``key``."""

    alert_id: str
    rule: str
    evidence: tuple[str, ...]
    at: datetime
    tenant: str
    subject: str | None = None
    root: str | None = None
    window: tuple[datetime, datetime] | None = None
    detail: str = ""
    propose_suspension: bool = False


def alert_id(rule: str, key: str) -> str:
    """The deterministic id of an alert: SHA-256 over the rule and what it is about."""
    return hashlib.sha256(f"govledger-alert\n{rule}\n{key}".encode()).hexdigest()


@dataclass(slots=True)
class _Report:
    event_id: str
    event: ExecutionCompleted | ExecutionFailed
    noticed: datetime


@dataclass(slots=True)
class MonitorState:
    """What the rules remember. Every event is folded once (``seen``); ``observe`` may be
    given the same event again (ledger replay overlapping Kafka) without effect."""

    config: RuleConfig = field(default_factory=RuleConfig)
    seen: dict[str, datetime] = field(default_factory=dict)
    requesters: dict[str, tuple[str, str]] = field(default_factory=dict)
    grants: dict[str, tuple[Artifact, datetime]] = field(default_factory=dict)
    revoked: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    executions: dict[str, tuple[ExecutionRequested, str]] = field(default_factory=dict)
    allowed: dict[str, tuple[ExecutionAllowed, str]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    reports: dict[str, _Report] = field(default_factory=dict)
    pending_denials: list[tuple[str, AuthorizationDenied | ExecutionRefused, datetime]] = \
        field(default_factory=list)
    denials: dict[tuple[str, str, str, datetime], list[str]] = field(default_factory=dict)
    raised: set[str] = field(default_factory=set)
    storms: Counter[tuple[str, str, datetime]] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)

    # -- folding ---------------------------------------------------------------------------

    def observe(self, event_id: str, event: Event, now: datetime, *,
                judge: bool = True) -> list[Alert]:
        """Fold one verified event noticed at ``now``. Returns no alert today: reports and
        denials are judged ``report_grace`` later by :meth:`tick` (what they are judged
        against, an allowance or the denied request's signer, travels on another topic).
        ``judge=False`` folds the event as context only (a replay's leaves before the
        horizon: a report there was judged when it was new, its allowance may be older)."""
        if event_id in self.seen:
            return []
        self.seen[event_id] = event.issued_at
        if isinstance(event, AuthorizationRequested | AuthorizationRevoked):
            self.requesters[event_id] = (event.signer, event.tenant)
        elif isinstance(event, AuthorizationGranted):
            self.grants[event_id] = (event.artifact, event.issued_at)
        elif isinstance(event, RevocationApplied):
            for artifact in event.revoked:
                self.revoked.setdefault(artifact, (event.issued_at, event_id))
        elif isinstance(event, ExecutionRequested):
            self.executions[event_id] = (event, event_id)
            self.requesters[event_id] = (event.signer, event.tenant)
            self.used.add(event.artifact_id)
        elif isinstance(event, ExecutionAllowed):
            self.allowed[event.execution_id] = (event, event_id)
        elif isinstance(event, ExecutionCompleted | ExecutionFailed):
            self.finished.add(event.execution_id)
            if judge:
                self.reports[event_id] = _Report(event_id, event, now)
        elif isinstance(event, AuthorizationDenied | ExecutionRefused):
            if judge:
                self.pending_denials.append((event_id, event, now))
        elif isinstance(event, AlertRaised):
            self.raised.add(event.alert_id)
        return []

    def _denied(self, event_id: str, event: AuthorizationDenied | ExecutionRefused
                ) -> list[Alert]:
        """Count a denial toward its principal's and tenant's window; the alerts of the
        counts that reach their threshold (not yet admitted)."""
        subject_id = event.request_id if isinstance(event, AuthorizationDenied) \
            else event.execution_id
        principal, tenant = self.requesters.get(subject_id, (None, event.tenant))
        klass = reason_class(event.reasons[0])
        width = self.config.burst_window
        start = _EPOCH + (event.issued_at - _EPOCH) // width * width
        alerts = []
        for dimension, key in (("principal", principal), ("tenant", tenant)):
            if key is None:  # an unauthenticated input: no principal to blame
                continue
            ids = self.denials.setdefault((dimension, key, klass, start), [])
            ids.append(event_id)
            if len(ids) != self.config.threshold(klass):
                continue
            alerts.append(Alert(
                alert_id(DENIAL_BURST, f"{dimension}\n{key}\n{klass}\n{start.isoformat()}"),
                DENIAL_BURST, tuple(sorted(ids[:MAX_EVIDENCE])), event.issued_at, tenant,
                subject=principal if dimension == "principal" else None,
                window=(start, start + width),
                detail=f"{len(ids)} {klass} denials for {dimension} {key} in {width}",
                propose_suspension=dimension == "principal" and klass in ("signature",
                                                                          "replay")))
        return alerts

    # -- judging with time -----------------------------------------------------------------

    def tick(self, now: datetime) -> list[Alert]:
        """The alerts time decides at ``now``: denials and reports past their grace,
        allowances silent past ``silent_after``. Forgets what is older than ``horizon``."""
        alerts: list[Alert] = []
        due = [d for d in self.pending_denials if d[2] + self.config.report_grace <= now]
        self.pending_denials = [d for d in self.pending_denials
                                if d[2] + self.config.report_grace > now]
        for event_id, denial, _ in due:
            alerts.extend(self._denied(event_id, denial))
        for report_id, report in list(self.reports.items()):
            if report.noticed + self.config.report_grace <= now:
                del self.reports[report_id]
                alerts.extend(self._judge_report(report))
        for execution_id, (allowed, allowed_id) in self.allowed.items():
            deadline = allowed.issued_at + self.config.silent_after
            if execution_id in self.finished or deadline > now:
                continue
            alerts.append(Alert(
                alert_id(SILENT, allowed_id), SILENT, (allowed_id,), deadline, allowed.tenant,
                subject=self._executor(execution_id), root=allowed.root,
                detail=f"no completion or failure within {self.config.silent_after}"))
        self._forget(now - self.config.horizon)
        return self._admit(alerts)

    def _executor(self, execution_id: str) -> str | None:
        found = self.executions.get(execution_id)
        return found[0].signer if found is not None else None

    def _judge_report(self, report: _Report) -> list[Alert]:
        event, found = report.event, self.allowed.get(report.event.execution_id)
        requested = self.executions.get(event.execution_id)
        evidence = [report.event_id] + ([found[1]] if found else []) \
            + ([requested[1]] if requested else [])
        subject = event.signer

        def alert(rule: str, detail: str, extra: tuple[str, ...] = ()) -> Alert:
            ids = tuple(sorted(set(evidence) | set(extra)))
            return Alert(alert_id(rule, "\n".join(ids)), rule, ids, event.issued_at,
                         event.tenant, subject=subject, root=event.root, detail=detail,
                         propose_suspension=rule == UNALLOWED)
        alerts = []
        if found is None:
            alerts.append(alert(UNALLOWED, f"{event.KIND} with no ExecutionAllowed"))
        elif found[0].artifact_id != event.artifact_id:
            alerts.append(alert(UNALLOWED, f"{event.KIND} names artifact "
                                f"{event.artifact_id[:16]}, allowed under another"))
        grant = self.grants.get(event.artifact_id)
        if grant is None:  # nothing to judge the execution against (the ledger may know)
            return alerts
        artifact, started = grant[0], requested[0].issued_at if requested else event.issued_at
        revoked = self.revoked.get(event.artifact_id)
        if revoked is not None and revoked[0] <= started:
            alerts.append(alert(AFTER_REVOCATION, "execution started after its artifact's "
                                "revocation took effect", (revoked[1], event.artifact_id)))
        if not artifact.window.not_before <= started < artifact.window.not_after:
            alerts.append(alert(OUTSIDE_WINDOW, "execution outside the artifact's window",
                                (event.artifact_id,)))
        if requested is not None and not _covers(artifact, requested[0]):
            alerts.append(alert(OUT_OF_SCOPE, f"{requested[0].action} on "
                                f"{requested[0].resource[:100]} not covered",
                                (event.artifact_id,)))
        return alerts

    def _admit(self, alerts: list[Alert]) -> list[Alert]:
        """Drop alerts already raised; bound a storm per rule and subject."""
        fresh = []
        for alert in alerts:
            if alert.alert_id in self.raised:
                continue
            self.raised.add(alert.alert_id)
            width = self.config.storm_window
            bucket = (alert.rule, alert.subject or alert.tenant,
                      _EPOCH + (alert.at - _EPOCH) // width * width)
            self.storms[bucket] += 1
            if self.storms[bucket] > self.config.storm_limit:
                self.suppressed[alert.rule] += 1
                continue
            fresh.append(alert)
        return fresh

    def _forget(self, before: datetime) -> None:
        """Bound the tables: drop facts issued before ``before`` (windows long closed)."""
        old = {eid for eid, at in self.seen.items() if at < before}
        if not old:
            return
        for eid in old:
            del self.seen[eid]
            self.requesters.pop(eid, None)
            self.executions.pop(eid, None)
        self.grants = {a: g for a, g in self.grants.items()
                       if g[0].window.not_after >= before}
        self.allowed = {e: a for e, a in self.allowed.items() if a[1] not in old}
        self.finished = {e for e in self.finished if e in self.allowed or e in self.executions}
        self.denials = {k: v for k, v in self.denials.items() if k[3] >= before}
        self.storms = Counter({k: v for k, v in self.storms.items() if k[2] >= before})


def _covers(artifact: Artifact, requested: ExecutionRequested) -> bool:
    try:
        return requested.action in artifact.scope.actions and \
            matches(artifact.scope.resource, requested.resource)
    except Rejected:  # a resource the pattern grammar refuses is not covered
        return False


def oldest_needed(now: datetime, config: RuleConfig) -> datetime:
    """Events issued before this cannot change a rule's outcome at ``now``: where a rebuild
    from the ledger may start."""
    return now - config.horizon
