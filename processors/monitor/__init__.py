"""The governance monitor (issue 18, docs/monitor.md): a faust-streaming app that watches
decisions, verdicts, executions and requests after the fact and raises signed alerts.

``rules`` live in the pure core (``processors.core.monitor_rules``); this package is the
shell: ``replay`` rebuilds the rules' windows from the ledger, ``app`` is the faust app
(verify -> fold -> sign -> publish), ``alerts`` builds and reads the signed AlertRaised
events, ``metrics`` its Prometheus registry.
"""
