"""Commands of the governance monitor: ``monitor`` (run it), ``alerts`` (what it raised, from
the ledger) and ``unused-grants`` (grants that expired unused: a report, not an alert)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from ledger.cli.options import DataOpt, JsonFlag, KafkaOpt, emit, settings_from
from ledger.cli.service_commands import serve
from ledger.core.alert_events import AlertRaised
from ledger.core.events import format_time
from ledger.datadir import DataDir
from ledger.errors import ConfigError
from ledger.log.reports import read_alerts, unused_grants
from ledger.log.store import LedgerStore


def monitor(data: DataOpt = None, kafka: KafkaOpt = None) -> None:
    """Run the governance monitor (a faust-streaming app) against a running Kafka and
    sequencer: it rebuilds its windows from the ledger, then follows requests, decisions,
    verdicts and executions and publishes signed AlertRaised events (docs/monitor.md).
    `govledger up` starts one already.

    Example: govledger monitor --data /data --kafka kafka:9092
    """
    settings = settings_from(data, kafka)
    if settings.kafka_bootstrap is None:
        raise ConfigError("monitor needs --kafka or GOVLEDGER_KAFKA_BOOTSTRAP (with the "
                          "embedded broker, `govledger up` runs the monitor)")
    serve(("monitor",), settings)


def _alert_dict(index: int, event_id: str, alert: AlertRaised) -> dict[str, object]:
    return {"index": index, "event_id": event_id, **alert.model_dump(mode="json")}


def _alert_line(index: int, alert: AlertRaised) -> str:
    about = alert.subject or f"tenant {alert.tenant}"
    proposal = f" (proposes suspending {alert.proposed_suspension})" \
        if alert.proposed_suspension else ""
    return (f"#{index} {format_time(alert.issued_at)} {alert.rule} {about}: {alert.detail}"
            f"{proposal} evidence={','.join(e[:12] for e in alert.evidence)}")


def alerts(data: DataOpt = None, follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new alerts as the ledger logs them (Ctrl-C "
        "stops).")] = False, as_json: JsonFlag = False) -> None:
    """List the monitor's alerts as the ledger holds them (read-only), oldest first.

    Example: govledger alerts --data ./govledger-data --follow
    """
    ledger_db = DataDir(settings_from(data).data_dir).ledger_db
    if not ledger_db.exists():
        raise ConfigError(f"no ledger at {ledger_db}: run `govledger init` first")
    start = 0
    try:
        while True:
            with LedgerStore(ledger_db) as store:
                size = int(store.tree_size())
                for index, event_id, alert in read_alerts(store, start):
                    emit(_alert_dict(index, event_id, alert), as_json, _alert_line(index, alert))
            start = size
            if not follow:
                return
            time.sleep(0.5)  # polling a read-only SQLite file: cheap, and no Kafka needed
    except KeyboardInterrupt:
        return


def unused_grants_cmd(data: DataOpt = None, as_json: JsonFlag = False) -> None:
    """Report the grants whose window has ended with no execution requested under them
    (over-provisioned authority to narrow, not an incident), from the ledger.

    Example: govledger unused-grants --data ./govledger-data --json
    """
    ledger_db = DataDir(settings_from(data).data_dir).ledger_db
    if not ledger_db.exists():
        raise ConfigError(f"no ledger at {ledger_db}: run `govledger init` first")
    with LedgerStore(ledger_db) as store:
        found = unused_grants(store, datetime.now(UTC))
    for grant in found:
        emit({"artifact_id": grant.artifact_id, "holder": grant.holder,
              "tenant": grant.tenant, "not_after": format_time(grant.not_after)}, as_json,
             f"{grant.artifact_id} {grant.holder} ({grant.tenant}) expired "
             f"{format_time(grant.not_after)}")
    if not as_json:
        typer.echo(f"{len(found)} grant(s) expired unused")
