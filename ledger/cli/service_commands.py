"""Commands that run the service on this machine: ``up`` (everything), ``processor``,
``sequencer``, ``api`` (one component each), ``health`` (their liveness probe), ``topics
create`` and ``demo``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import (
    EXIT_INVALID,
    DataOpt,
    KafkaOpt,
    LogLevel,
    configure_logging,
    settings_from,
)
from ledger.config import Settings
from ledger.errors import ConfigError, Unavailable
from ledger.kafka.clients import client_options
from ledger.kafka.topics import Topics, ensure_topics
from ledger.server.heartbeat import heartbeat_age
from ledger.server.service import COMPONENTS, Service, run_service
from ledger.telemetry import configure_tracing


def topics_create(
    kafka: KafkaOpt = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic.")] = None,
    replication: Annotated[int | None, typer.Option(help="Replication factor.")] = None,
) -> None:
    """Create the gov.* topics on a Kafka cluster (idempotent).

    Example: GOVLEDGER_KAFKA_BOOTSTRAP=kafka:9092 govledger topics create --partitions 12
    """
    settings = settings_from(kafka=kafka, partitions=partitions,
                             replication_factor=replication)
    if settings.kafka_bootstrap is None:
        raise ConfigError("topics create needs --kafka or GOVLEDGER_KAFKA_BOOTSTRAP")
    topics = Topics(settings.topic_prefix)
    found = asyncio.run(ensure_topics(settings.kafka_bootstrap, topics.all(),
                                      settings.partitions, settings.replication_factor,
                                      client_options=client_options(settings),
                                      single=topics.single_partition()))
    for name, count in found.items():
        typer.echo(f"{name}: {count} partitions")


def serve(components: tuple[str, ...], settings: Settings,
          ready_file: Path | None = None) -> None:
    configure_logging(log_format=settings.log_format)
    configure_tracing("govledger" if len(components) > 1 else f"govledger-{components[0]}")

    def ready(service: Service) -> None:
        info = service.describe()
        log = logging.getLogger("govledger")
        for key, value in info.items():
            log.info("%-16s %s", key, value)
        log.info("ready; stop with Ctrl-C (SIGINT) or SIGTERM")
        if ready_file is not None:
            tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            tmp.replace(ready_file)  # readers never see a half-written file

    code = asyncio.run(run_service(settings, components, ready))
    if code:
        raise typer.Exit(code)


ApiHost = Annotated[str | None, typer.Option(help="API listen address.")]
ApiPort = Annotated[int | None, typer.Option(help="API port (0 = a free port).")]


ReadyFile = Annotated[Path | None, typer.Option(
    help="When ready, write the addresses (api, kafka), origin and vkey here as JSON.")]


def up(data: DataOpt = None, kafka: KafkaOpt = None, api_host: ApiHost = None,
       api_port: ApiPort = None, ready_file: ReadyFile = None) -> None:
    """Run everything on this machine: broker (embedded unless --kafka), topics, processor,
    sequencer and HTTP API. First start creates keys, keyring and policies and says where.

    Example: govledger up --data ./govledger-data --api-port 8080
    """
    serve(COMPONENTS, settings_from(data, kafka, api_host=api_host, api_port=api_port),
          ready_file)


def processor(data: DataOpt = None, kafka: KafkaOpt = None) -> None:
    """Run one decision worker (scale out with more workers and partitions).

    Example: govledger processor --data /data --kafka kafka:9092
    """
    serve(("processor",), settings_from(data, kafka))


def sequencer(data: DataOpt = None, kafka: KafkaOpt = None) -> None:
    """Run the ledger sequencer (exactly one per log).

    Example: govledger sequencer --data /data --kafka kafka:9092
    """
    serve(("sequencer",), settings_from(data, kafka))


def api(data: DataOpt = None, kafka: KafkaOpt = None, api_host: ApiHost = None,
        api_port: ApiPort = None) -> None:
    """Run the HTTP API (submit envelopes, decisions, checkpoints, proofs, health, metrics).

    Example: govledger api --data /data --kafka kafka:9092 --api-host 0.0.0.0 --api-port 8080
    """
    serve(("api",), settings_from(data, kafka, api_host=api_host, api_port=api_port))


def health(max_age: Annotated[float, typer.Option(
        min=1.0, help="Seconds a heartbeat stays fresh.")] = 30.0) -> None:
    """Exit 0 while the processor or sequencer running here beats (its heartbeat file,
    GOVLEDGER_HEARTBEAT_FILE, is younger than --max-age), 3 otherwise: the liveness probe
    of the roles that serve no HTTP (docs/production.md).

    Example: GOVLEDGER_HEARTBEAT_FILE=/run/govledger/heartbeat govledger health --max-age 30
    """
    settings = settings_from()
    if settings.heartbeat_file is None:
        raise ConfigError("govledger health needs GOVLEDGER_HEARTBEAT_FILE (the file the "
                          "service beats into)")
    age = heartbeat_age(settings.heartbeat_file, time.time())
    if age > max_age:
        raise Unavailable(f"the last heartbeat is {age:.0f} s old (more than {max_age:.0f} s)")
    typer.echo(f"alive: heartbeat {max(age, 0.0):.1f} s ago")


def demo(data: Annotated[Path | None, typer.Option(
        "--data", help="Keep the demo's data directory here (default: a temporary one).")] = None,
         ) -> None:
    """Play the whole product on this machine in under a minute: agents, a delegation chain,
    denials, gated executions, a revocation cascade and an offline-verified evidence bundle.

    Starts its own embedded stack; exits 0 only if every expected outcome happened.
    Example: govledger demo
    """
    from ledger.demo import run_demo
    configure_logging(LogLevel.WARNING)
    if not run_demo(data):
        raise typer.Exit(EXIT_INVALID)


