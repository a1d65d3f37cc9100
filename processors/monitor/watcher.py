"""The monitor's shell around the pure rules: envelope bytes in, signed alert envelopes out.

Every input is verified with the ledger's admission rule (``verify_loggable``: a known key,
a valid Ed25519 signature over the received bytes, a signer allowed to sign its kind) before
the rules see it. An input that fails is counted by reason and ignored: forged evidence
never raises an alert, and never stops the monitor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from ledger.core.keys import KeyRing, Signer
from ledger.core.signers import verify_loggable
from ledger.errors import Rejected
from processors.core.monitor_rules import Alert, MonitorState, RuleConfig
from processors.monitor.alerts import sign_alert
from processors.monitor.metrics import MonitorMetrics

log = logging.getLogger("govledger.monitor")


class Watcher:
    """Verify, fold, judge, sign. ``keyring`` is a KeyRing or a zero-argument callable that
    returns the current one (the governance fold can plug in a live ring)."""

    def __init__(self, keyring: KeyRing | Callable[[], KeyRing], signer: Signer, identity: str,
                 config: RuleConfig | None = None, metrics: MonitorMetrics | None = None
                 ) -> None:
        self._keyring = keyring
        self.signer, self.identity = signer, identity
        self.state = MonitorState(config or RuleConfig())
        self.metrics = metrics or MonitorMetrics()
        self._suppressed: dict[str, int] = {}

    @property
    def keyring(self) -> KeyRing:
        return self._keyring if isinstance(self._keyring, KeyRing) else self._keyring()

    def ingest(self, data: bytes, now: datetime, *, judge: bool = True
               ) -> list[tuple[Alert, bytes]]:
        """Fold one envelope noticed at ``now`` (``judge``: see MonitorState.observe); the
        alerts it raises at once, signed. An unverifiable envelope is counted
        (``govledger_monitor_unverified_total``) and ignored."""
        try:
            verified = verify_loggable(data, self.keyring)
        except Rejected as exc:
            self.metrics.unverified.labels(exc.reason.value).inc()
            return []
        self.metrics.events.labels(verified.kind).inc()
        return self._signed(self.state.observe(verified.event_id, verified.event, now,
                                               judge=judge))

    def tick(self, now: datetime) -> list[tuple[Alert, bytes]]:
        """The alerts time decides at ``now``, signed."""
        return self._signed(self.state.tick(now))

    def _signed(self, alerts: list[Alert]) -> list[tuple[Alert, bytes]]:
        for rule, count in self.state.suppressed.items():
            if count > self._suppressed.get(rule, 0):
                self.metrics.suppressed.labels(rule).inc(count - self._suppressed.get(rule, 0))
                self._suppressed[rule] = count
                log.warning("alert storm: %d %s alerts suppressed so far", count, rule)
        out = []
        for alert in alerts:
            out.append((alert, sign_alert(alert, self.signer, self.identity)))
            self.metrics.alerts.labels(alert.rule).inc()
            log.warning("ALERT %s %s: %s (evidence %s)", alert.rule, alert.alert_id[:16],
                        alert.detail, ",".join(e[:12] for e in alert.evidence[:4]))
        return out
