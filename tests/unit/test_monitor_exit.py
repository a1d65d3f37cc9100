"""The monitor process (python -m processors.monitor) never exits 1, which `govledger up`
reads back as a failed check (ledger.errors.error_for_exit): faust's worker exits 1 on a
crash, and an error no component expects is the system's fault (3), as in every child."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.monitor import __main__ as monitor


class CrashingApp:
    def __init__(self, outcome: BaseException) -> None:
        self.outcome = outcome

    def main(self) -> None:
        raise self.outcome


@pytest.mark.parametrize(("outcome", "status"), [
    (SystemExit(1), 3),  # faust's worker after a crash
    (RuntimeError("a bug"), 3),
    (SystemExit(0), 0),
    (SystemExit(2), 2),
])
def test_the_monitor_exits_by_whose_fault(outcome: BaseException, status: int,
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr("sys.argv", ["python -m processors.monitor"])
    monkeypatch.setenv("GOVLEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GOVLEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("GOVLEDGER_MONITOR_NICE", "0")  # the test process stays as it is
    monkeypatch.setenv("GOVLEDGER_MONITOR_SCHED_IDLE", "false")
    monkeypatch.setattr(monitor, "build_watcher", lambda settings: None)
    monkeypatch.setattr(monitor, "build_app", lambda *args: CrashingApp(outcome))
    with pytest.raises(SystemExit) as exited:
        monitor.main()
    assert exited.value.code == status
