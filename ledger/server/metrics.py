"""Prometheus metrics of a govledger process, in a registry of their own.

Every :class:`Metrics` owns a dedicated ``CollectorRegistry`` (never the global one), so two
apps in one process, or two tests, never collide. The names::

    govledger_decisions_total{outcome,reason}        counter: one per decision
    govledger_decision_latency_seconds               histogram: request produced -> decision
    govledger_http_requests_total{route,status}      counter (route = the route template)
    govledger_http_request_seconds{route}            histogram
    govledger_ledger_size                            gauge: leaves stored (sequenced)
    govledger_checkpoint_size                        gauge: leaves under the latest checkpoint
    govledger_checkpoint_age_seconds                 gauge: since the latest checkpoint
    govledger_consumer_lag{component,topic}          gauge
    govledger_sequencer_integration_seconds          histogram: produced -> under a checkpoint
    govledger_ledger_refused_total{reason}           counter: envelopes the sequencer refused
    govledger_ledger_out_of_order_total{reason}      counter: appended before a cause arrived
                                                     (reason cause-missing or hold-full)
    govledger_alerts_total{rule}                     counter: the monitor's alerts in the ledger
    govledger_shadow_decisions_total{policy_id,agreement}
                                                     counter: decisions with a shadow outcome,
                                                     agree/disagree (ledger.core.shadow)

Label values are bounded so a hostile input cannot blow up the series count: ``reason`` is a
:class:`~ledger.errors.Reason` value, ``none`` or ``OTHER``; ``route`` is a route template;
``policy_id`` comes from authority-signed decisions (admin-published policies), and past
:data:`MAX_POLICY_LABELS` distinct ids the rest count as ``OTHER``.

``govledger_checkpoint_age_seconds``: C2SP checkpoints carry no timestamp, so the age is what
the sequencer reports through :meth:`Metrics.set_ledger`. A process that only reads the ledger
(the API alone) calls :meth:`Metrics.observe_store` instead, which counts from the first time
*this process* saw the current checkpoint size: a lower bound, exact to one scrape interval
after the first scrape.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from ledger.core.shadow import Agreement
from ledger.errors import ConfigError, Reason
from ledger.log.holdback import CAUSE_MISSING, HOLD_FULL
from processors.core.monitor_rules import RULES as KNOWN_RULES

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
DECISION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 5.0, 10.0)
HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                       5.0, 10.0, 30.0)
INTEGRATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              30.0, 60.0, 120.0, 300.0)
_REASONS: Final = frozenset(r.value for r in Reason)


OUT_OF_ORDER_REASONS = (CAUSE_MISSING, HOLD_FULL)
MAX_POLICY_LABELS: Final = 256


def reason_label(reasons: Sequence[str]) -> str:
    """The ``reason`` label of a decision: its first (determining) reason code, ``none`` when
    it has none, ``OTHER`` for a string that is not a known reason code."""
    if not reasons:
        return "none"
    first = str(reasons[0])
    return first if first in _REASONS else "OTHER"


def _usable(seconds: float | None) -> bool:
    return seconds is not None and math.isfinite(seconds) and seconds >= 0


class Metrics:
    """The metrics of one process. ``clock`` (monotonic seconds) is for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        reg = self.registry
        self.decisions = Counter("govledger_decisions", "Decisions made, by outcome and "
                                 "determining reason code", ("outcome", "reason"), registry=reg)
        self.decision_latency = Histogram(
            "govledger_decision_latency_seconds", "Request produced to decision produced",
            buckets=DECISION_BUCKETS, registry=reg)
        self.http_requests = Counter("govledger_http_requests", "HTTP requests served",
                                     ("route", "status"), registry=reg)
        self.http_seconds = Histogram("govledger_http_request_seconds",
                                      "HTTP request handling time", ("route",),
                                      buckets=HTTP_BUCKETS, registry=reg)
        self.alerts = Counter("govledger_alerts", "The governance monitor's alerts in the "
                              "ledger, by rule", ["rule"], registry=self.registry)
        self.alerts_scanned = 0
        self.ledger_size = Gauge("govledger_ledger_size", "Leaves in the ledger (sequenced)",
                                 registry=reg)
        self.checkpoint_size = Gauge("govledger_checkpoint_size",
                                     "Tree size of the latest signed checkpoint (published)",
                                     registry=reg)
        self.checkpoint_age = Gauge("govledger_checkpoint_age_seconds",
                                    "Seconds since the latest signed checkpoint", registry=reg)
        self.consumer_lag = Gauge("govledger_consumer_lag", "Messages behind the high-water "
                                  "mark", ("component", "topic"), registry=reg)
        self.integration = Histogram(
            "govledger_sequencer_integration_seconds",
            "Event produced to under a signed checkpoint", buckets=INTEGRATION_BUCKETS,
            registry=reg)
        self.ledger_refused = Counter(
            "govledger_ledger_refused", "Envelopes the sequencer refused to log, by reason code",
            ("reason",), registry=reg)
        self.ledger_out_of_order = Counter(
            "govledger_ledger_out_of_order", "Events the sequencer appended without their "
            "causes, past a hold-back bound (ledger/log/holdback.py), by reason", ("reason",),
            registry=reg)
        self.shadow = Counter(
            "govledger_shadow_decisions", "Decisions carrying a shadow policy's outcome, by "
            "policy id and whether the shadow agreed", ("policy_id", "agreement"),
            registry=reg)
        self._policy_labels: set[str] = set()
        self._service_sets_ledger = False
        self._seen: tuple[int, float] | None = None

    # -- called by the service ---------------------------------------------------------------

    def observe_alerts(self, rules: Sequence[str], scanned_to: int) -> None:
        """Count the AlertRaised leaves found below ``scanned_to`` (the next scan starts
        there). A rule this version does not know counts as ``other``."""
        for rule in rules:
            self.alerts.labels(rule=rule if rule in KNOWN_RULES else "other").inc()
        self.alerts_scanned = scanned_to

    def observe_decision(self, outcome: str, reasons: Sequence[str],
                         latency_s: float | None) -> None:
        """Count one decision (``outcome`` e.g. ``allow``/``deny``), labelled with its first
        reason. A missing, negative or non-finite latency (clock skew) is not observed."""
        self.decisions.labels(outcome=outcome, reason=reason_label(reasons)).inc()
        if latency_s is not None and _usable(latency_s):
            self.decision_latency.observe(latency_s)

    def observe_shadow(self, found: Agreement) -> None:
        """Count one decision's shadow outcome under each of its policy ids."""
        agreed = "agree" if found.agrees else "disagree"
        for policy_id in found.policy_ids:
            if policy_id not in self._policy_labels:
                if len(self._policy_labels) >= MAX_POLICY_LABELS:
                    policy_id = "OTHER"
                else:
                    self._policy_labels.add(policy_id)
            self.shadow.labels(policy_id=policy_id, agreement=agreed).inc()

    def set_ledger(self, size: int, checkpoint_age_s: float) -> None:
        """Ledger size and checkpoint age as the sequencer knows them. From the first call on,
        :meth:`observe_store` leaves these two gauges alone (the sequencer is exact)."""
        self._service_sets_ledger = True
        self.ledger_size.set(size)
        if _usable(checkpoint_age_s):
            self.checkpoint_age.set(checkpoint_age_s)

    def observe_refused(self, by_reason: Mapping[str, int]) -> None:
        """Count envelopes the sequencer refused, ``reason code -> count`` (an unknown code
        is counted as ``OTHER``)."""
        for reason, count in by_reason.items():
            self.ledger_refused.labels(reason=reason_label([reason])).inc(count)

    def observe_out_of_order(self, by_reason: Mapping[str, int]) -> None:
        """Count events appended without their causes, ``hold-back reason -> count`` (a
        reason other than the two the hold-back gives is counted as ``OTHER``)."""
        for reason, count in by_reason.items():
            label = reason if reason in OUT_OF_ORDER_REASONS else "OTHER"
            self.ledger_out_of_order.labels(reason=label).inc(count)

    def set_lag(self, component: str, topic: str, lag: int) -> None:
        """Consumer lag of ``component`` on ``topic`` (negative values are stored as 0)."""
        self.consumer_lag.labels(component=component, topic=topic).set(max(lag, 0))

    def observe_integration(self, seconds: float) -> None:
        """Time from an event being produced to its leaf being under a signed checkpoint."""
        if _usable(seconds):
            self.integration.observe(seconds)

    # -- called by the HTTP shell ----------------------------------------------------------

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route=route, status=str(status)).inc()
        if _usable(seconds):
            self.http_seconds.labels(route=route).observe(seconds)

    def observe_store(self, tree_size: int, checkpoint_size: int | None) -> None:
        """Ledger numbers read from the store (module docstring for the age's meaning)."""
        if checkpoint_size is not None:
            self.checkpoint_size.set(checkpoint_size)
        if self._service_sets_ledger:
            return
        self.ledger_size.set(tree_size)
        if checkpoint_size is None:
            return
        now = self._clock()
        if self._seen is None or self._seen[0] != checkpoint_size:
            self._seen = (checkpoint_size, now)
        self.checkpoint_age.set(now - self._seen[1])

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def serve_metrics(metrics: Metrics, host: str, port: int) -> Callable[[], None]:
    """Serve ``metrics`` at http://host:port/ on a thread (a role without the HTTP API);
    returns the function that stops it. Raises ConfigError if it cannot listen there."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()
    return stop
