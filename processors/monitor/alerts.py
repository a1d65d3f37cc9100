"""AlertRaised events: built from a rule's :class:`~processors.core.monitor_rules.Alert`,
signed by the authority key (DESIGN.md section 7: alerts are an authority kind) (read back from the
ledger by ``ledger.log.reports``: ``govledger alerts``).

An alert's payload is deterministic: ``issued_at`` is the alert's evidence time and the
nonce is derived from the alert id, so a monitor that raises the same alert again after a
restart produces the same bytes, the same event id, and the ledger keeps one leaf.
"""

from __future__ import annotations

from ledger.core.alert_events import AlertRaised
from ledger.core.envelope import sign_event
from ledger.core.events import Window
from ledger.core.keys import Signer
from processors.core.monitor_rules import Alert


def alert_event(alert: Alert, identity: str) -> AlertRaised:
    """The AlertRaised for ``alert``, signed as ``identity`` (the authority's)."""
    window = None if alert.window is None else Window(not_before=alert.window[0],
                                                      not_after=alert.window[1])
    return AlertRaised(
        signer=identity, tenant=alert.tenant, nonce=f"alert-{alert.alert_id[:40]}",
        issued_at=alert.at, alert_id=alert.alert_id, rule=alert.rule, subject=alert.subject,
        root=alert.root, evidence=alert.evidence, window=window, detail=alert.detail[:512],
        proposed_suspension=alert.subject if alert.propose_suspension else None)


def sign_alert(alert: Alert, signer: Signer, identity: str) -> bytes:
    """The envelope of ``alert``'s AlertRaised. Deterministic (Ed25519 signatures are)."""
    return sign_event(alert_event(alert, identity), signer)
