"""The monitor's Prometheus metrics, in a registry of their own::

    govledger_monitor_events_total{kind}          counter: verified events folded
    govledger_monitor_unverified_total{reason}    counter: envelopes that failed verification
                                                  (ignored: never folded, never alerted on)
    govledger_monitor_alerts_total{rule}          counter: alerts published
    govledger_monitor_suppressed_total{rule}      counter: alerts dropped by the storm limit
    govledger_monitor_lag{topic}                  gauge: records behind the high-water mark
    govledger_monitor_replayed                    gauge: ledger leaves folded at start

Label values are bounded: ``kind`` an event kind, ``reason`` a Reason code, ``rule`` a rule.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class MonitorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("govledger_monitor_events", "Verified events folded", ["kind"],
                              registry=r)
        self.unverified = Counter("govledger_monitor_unverified",
                                  "Envelopes that failed verification (ignored)", ["reason"],
                                  registry=r)
        self.alerts = Counter("govledger_monitor_alerts", "Alerts published", ["rule"],
                              registry=r)
        self.suppressed = Counter("govledger_monitor_suppressed",
                                  "Alerts dropped by the storm limit", ["rule"], registry=r)
        self.lag = Gauge("govledger_monitor_lag", "Records behind the high-water mark",
                         ["topic"], registry=r)
        self.replayed = Gauge("govledger_monitor_replayed", "Ledger leaves folded at start",
                              registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on ``port`` (a daemon thread). Raises OSError."""
        start_http_server(port, addr=host, registry=self.registry)
