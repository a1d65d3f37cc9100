"""The functional core does no I/O: walk its imports with ast and refuse the shell's modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    *sorted((ROOT / "ledger" / "core").glob("*.py")),
    ROOT / "ledger" / "errors.py",
    *sorted((ROOT / "processors" / "core").glob("*.py")),
]
FORBIDDEN = {"sqlite3", "sqlite_utils", "aiokafka", "faust", "socket", "os", "time", "uuid",
             "random", "secrets", "subprocess", "asyncio", "httpx", "fastapi", "pathlib",
             "ledger.log", "ledger.kafka", "ledger.server", "ledger.sdk", "ledger.cli",
             "ledger.demo", "ledger.keyfiles", "ledger.config", "ledger.datadir",
             "processors.worker", "processors.journal", "processors.reconcile",
             "processors.policy", "processors.app"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_io(path: Path) -> None:
    bad = {name for name in imported_modules(path)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_core_has_no_wall_clock_or_randomness() -> None:
    for path in CORE:
        text = path.read_text(encoding="utf-8")
        for needle in ("datetime.now(", "utcnow(", "uuid4(", "os.environ"):
            assert needle not in text, f"{path.name} uses {needle}"


def test_the_purity_check_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import sqlite3\nfrom aiokafka import AIOKafkaProducer\n")
    assert imported_modules(sample) & FORBIDDEN == {"sqlite3", "aiokafka"}
