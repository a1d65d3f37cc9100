"""A child of `govledger up` exits by whose fault (ledger.entrypoint.child_main), and the
service reads the status back as the same error (ledger.errors.error_for_exit): an error no
component expects is the system's (3), never the status of a failed check (1), which is
also Python's own status for an uncaught exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.entrypoint import child_main
from ledger.errors import (
    ConfigError,
    GovLedgerError,
    ProofError,
    Unavailable,
    error_for_exit,
    exit_status,
)


def exit_of(error: BaseException, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    monkeypatch.setattr("sys.argv", ["python -m test-child"])
    monkeypatch.setenv("GOVLEDGER_DATA_DIR", str(tmp_path))

    async def serve(settings: Settings, ready_file: Path | None) -> None:
        raise error
    with pytest.raises(SystemExit) as exited:
        child_main("test-child", None, "govledger.test", "govledger-test", serve)
    assert isinstance(exited.value.code, int)
    return exited.value.code


@pytest.mark.parametrize(("error", "status", "read_back"), [
    (ProofError("the ledger does not match its checkpoint"), 1, ProofError),
    (ConfigError("no key"), 2, ConfigError),
    (Unavailable("broker down"), 3, Unavailable),
    (RuntimeError("a bug"), 3, Unavailable),
    (KeyError("a bug"), 3, Unavailable),
])
def test_a_child_exits_by_whose_fault_and_is_read_back_as_the_same_error(
        error: BaseException, status: int, read_back: type[GovLedgerError],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert exit_of(error, monkeypatch, tmp_path) == status
    assert type(error_for_exit(status, "the child exited")) is read_back
    if isinstance(error, GovLedgerError):
        assert exit_status(error) == status


def test_a_child_killed_by_a_signal_is_unavailable() -> None:
    assert type(error_for_exit(-9, "killed")) is Unavailable


def test_tracing_that_cannot_start_is_the_systems_fault_not_a_failed_check(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_exporter(service_name: str) -> None:
        raise ImportError("No module named 'opentelemetry.exporter.otlp'")

    monkeypatch.setattr("ledger.entrypoint.configure_tracing", no_exporter)
    assert exit_of(RuntimeError("not reached"), monkeypatch, tmp_path) == 3
