"""What every command shares: exit codes, the --data/--kafka/--json options, printing a
result as text or JSON, reading an envelope file, and Settings from flags plus environment."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ledger.config import Settings, load_settings
from ledger.errors import EXIT_CONFIG, ConfigError
from ledger.errors import EXIT_INVALID as EXIT_INVALID  # re-exported: the CLI's codes
from ledger.errors import EXIT_UNAVAILABLE as EXIT_UNAVAILABLE
from ledger.telemetry import log_handler

EXIT_USAGE = EXIT_CONFIG  # the CLI's name for it: a bad option or setting
# `govledger exec` runs a command whose own status passes through, so its own outcomes use
# codes a command rarely does (the convention of env, timeout, nice): 124 no verdict (the
# service unavailable), 125 refused by the gate, 126 not executable, 127 not found.
EXEC_UNAVAILABLE, EXEC_REFUSED, EXEC_NOT_EXECUTABLE, EXEC_NOT_FOUND = 124, 125, 126, 127


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class _Logging:
    """The level ``--log-level`` chose (None: each command's default)."""

    level: LogLevel | None = None


def set_log_level(level: LogLevel | None) -> None:
    _Logging.level = level


def configure_logging(default: LogLevel = LogLevel.INFO, log_format: str = "text") -> None:
    """Log to stderr at ``--log-level`` (else ``default``) as ``log_format`` lines ("text" or
    "json": ledger/telemetry.py); Kafka's client library at WARNING unless debugging (it is
    chatty at INFO)."""
    level = getattr(logging, str(_Logging.level or default).upper())
    logging.basicConfig(level=level, handlers=[log_handler(log_format)])
    logging.getLogger("aiokafka").setLevel(
        logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING))

DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Data directory (default: $GOVLEDGER_DATA_DIR or ./govledger-data).")]
KafkaOpt = Annotated[str | None, typer.Option(
    "--kafka", help="Kafka bootstrap host:port (default: $GOVLEDGER_KAFKA_BOOTSTRAP; unset = "
    "start the embedded broker).")]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def emit(data: dict[str, object], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, sort_keys=True) if as_json else text)


def read_envelope_file(path: Path) -> bytes:
    """Envelope bytes from a file; one trailing newline (as editors add) is not part of them."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return data[:-1] if data.endswith(b"\n") else data



def settings_from(data: Path | None = None, kafka: str | None = None,
                  **overrides: object) -> Settings:
    """Settings from the environment plus the command's flags (flags win)."""
    if data is not None:
        overrides["data_dir"] = data
    if kafka is not None:
        overrides["kafka_bootstrap"] = kafka
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})
