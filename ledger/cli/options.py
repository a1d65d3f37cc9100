"""What every command shares: exit codes, the --data/--kafka/--json options, printing a
result as text or JSON, reading an envelope file, and Settings from flags plus environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ledger.config import Settings, load_settings
from ledger.errors import ConfigError

EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

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
