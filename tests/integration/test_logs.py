"""The processor child `govledger up` starts (`python -m processors`) honours
GOVLEDGER_LOG_FORMAT and the log level passed down to it (GOVLEDGER_LOG_LEVEL, which
`govledger --log-level` sets for it): a real subprocess on a real (empty) data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_processor_child(tmp_path: Path, **env: str) -> tuple[int, str]:
    """`python -m processors` (what `govledger up` starts) on a data directory without a
    ledger: it logs one configuration error and exits 2, before touching Kafka."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOVLEDGER_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-m", "processors"], capture_output=True, text=True, timeout=120,
        check=False, env={**clean, "GOVLEDGER_DATA_DIR": str(tmp_path),
                          "GOVLEDGER_KAFKA_BOOTSTRAP": "127.0.0.1:1", **env})
    return result.returncode, result.stderr


def test_processor_child_logs_json_at_the_level_it_is_given(tmp_path: Path) -> None:
    code, stderr = run_processor_child(tmp_path, GOVLEDGER_LOG_FORMAT="json")
    assert code == 2
    [line] = [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]
    assert line["level"] == "ERROR" and "no ledger" in line["message"]
    code, stderr = run_processor_child(tmp_path, GOVLEDGER_LOG_LEVEL="critical")
    assert code == 2 and "no ledger" not in stderr
