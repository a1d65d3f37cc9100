"""Imports point one way (issue 12): walk every module's imports with ast and refuse a wrong one.

The rules, as the layout fixes them:

- ``processors`` may import from ``ledger`` only ``ledger.core``, ``ledger.kafka``,
  ``ledger.log``, ``ledger.config``, ``ledger.errors``, ``ledger.datadir``,
  ``ledger.keyfiles``, ``ledger.clock`` (the wall clock, a shell module) and
  ``ledger.telemetry`` (traces and log format, a shell module) and ``ledger.entrypoint``
  (how a component runs as a process of its own, a shell module): never
  ``ledger.server``, ``ledger.sdk``, ``ledger.cli``, ``ledger.demo`` (nor the SDK surface
  ``ledger`` itself). ``ledger.log`` is allowed for two things: the SQLite opener the
  journal shares with the store, and the read-only store the processor reconciles its
  journal against (the lead's decision: the issue names only the opener).
- ``ledger.server`` is the only part of ``ledger`` that imports ``processors`` (it composes
  them); a lazy import inside a function counts as much as one at the top.
- ``ledger.core`` imports from this project only ``ledger.core`` and ``ledger.errors``
  (third-party and I/O imports: tests/unit/test_core_purity.py).
- ``ledger.gateway`` (the MCP gateway, issue 17) imports only ``ledger.gateway``,
  ``ledger.sdk``, ``ledger.core``, ``ledger.kafka``, ``ledger.config``, ``ledger.errors``
  and ``ledger.http_server`` (the uvicorn wrapper it shares with the service's API, a shell
  module): it is an executor, so it reaches the service through the SDK like any other (the
  CLI reads its key files and hands them over).
- The packages ``ledger.core``, ``ledger.log``, ``ledger.kafka``, ``ledger.sdk``,
  ``ledger.gateway``, ``ledger.server`` and ``processors`` import each other without a
  cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger.core", "ledger.log", "ledger.kafka", "ledger.sdk", "ledger.gateway",
            "ledger.server", "processors")
PROCESSORS_MAY_USE = ("ledger.core", "ledger.kafka", "ledger.log", "ledger.config",
                      "ledger.errors", "ledger.datadir", "ledger.keyfiles", "ledger.clock",
                      "ledger.telemetry", "ledger.entrypoint")
CORE_MAY_USE = ("ledger.core", "ledger.errors")
GATEWAY_MAY_USE = ("ledger.gateway", "ledger.sdk", "ledger.core", "ledger.kafka",
                   "ledger.config", "ledger.errors", "ledger.http_server")
OURS = ("ledger", "processors")


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> set[str]:
    """Every project module the file imports, anywhere in it (a function body included).

    ``from a.b import c`` counts as ``a.b`` and ``a.b.c`` (c may be a module); relative
    imports are resolved against ``module``."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if any(within(n, top) for top in OURS)}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module name -> the project modules it imports, for every .py under ledger/, processors/."""
    graph: dict[str, set[str]] = {}
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            name = module_name(path, root)
            graph[name] = imported_modules(path, name)
    return graph


def violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """The imports that break a rule of the module docstring, as 'importer -> imported'."""
    found: list[str] = []
    for module, imports in sorted(graph.items()):
        flagged: list[str] = []
        for name in sorted(imports):
            if any(within(name, done) for done in flagged):
                continue  # a.b.c under a flagged a.b: one line per import
            before = len(found)
            if within(module, "processors") and within(name, "ledger") and not any(
                    within(name, ok) for ok in PROCESSORS_MAY_USE):
                found.append(f"{module} -> {name} (processors may not use it)")
            if (within(module, "ledger") and not within(module, "ledger.server")
                    and within(name, "processors")):
                found.append(f"{module} -> {name} (only ledger.server imports processors)")
            if within(module, "ledger.core") and not any(within(name, ok) for ok in CORE_MAY_USE):
                found.append(f"{module} -> {name} (ledger.core is the pure core)")
            if within(module, "ledger.gateway") and within(name, "ledger") and not any(
                    within(name, ok) for ok in GATEWAY_MAY_USE):
                found.append(f"{module} -> {name} (the gateway reaches the service "
                             "through the SDK)")
            if len(found) > before:
                flagged.append(name)
    return found


def package_of(module: str) -> str | None:
    matches = [p for p in PACKAGES if within(module, p)]
    return max(matches, key=len) if matches else None


def package_cycle(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """A cycle in the package graph (its packages in order, the first repeated at the end),
    or [] when the packages import each other one way only."""
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for module, imports in graph.items():
        source = package_of(module)
        for name in imports:
            target = package_of(name)
            if source is not None and target is not None and target != source:
                edges[source].add(target)
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for package in PACKAGES:
        if package not in state and (cycle := visit(package)):
            return cycle
    return []


def test_imports_point_one_way() -> None:
    found = violations(import_graph(ROOT))
    assert not found, "imports against the layout:\n" + "\n".join(found)


def test_packages_import_each_other_without_a_cycle() -> None:
    assert package_cycle(import_graph(ROOT)) == []


def test_the_checker_catches_planted_violations(tmp_path: Path) -> None:
    planted = {
        "processors/bad.py": "def late():\n    from ledger.server.api import build_app\n",
        "processors/core/bad.py": "import ledger.sdk.client\n",
        "ledger/log/bad.py": "def late():\n    import processors.journal\n",
        "ledger/core/bad.py": "from ledger.log import store\n",
        "ledger/kafka/bad.py": "from ledger.sdk import client\n",
        "ledger/sdk/bad.py": "from ..kafka import clients\n",
        "ledger/server/fine.py": "from processors.app import build_engine\n",
        "ledger/gateway/bad.py": "from ledger.log.store import LedgerStore\n",
        "ledger/gateway/fine.py": "from ledger.sdk.gate import Gate\n",
    }
    for rel, text in planted.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path)
    assert violations(graph) == [
        "ledger.core.bad -> ledger.log (ledger.core is the pure core)",
        "ledger.gateway.bad -> ledger.log.store (the gateway reaches the service through "
        "the SDK)",
        "ledger.log.bad -> processors.journal (only ledger.server imports processors)",
        "processors.bad -> ledger.server.api (processors may not use it)",
        "processors.core.bad -> ledger.sdk.client (processors may not use it)",
    ]
    assert package_cycle(graph) in (["ledger.kafka", "ledger.sdk", "ledger.kafka"],
                                    ["ledger.sdk", "ledger.kafka", "ledger.sdk"])


def test_importing_the_sdk_surface_loads_no_server_and_no_processor() -> None:
    script = ("import ledger, sys\n"
              "heavy = {'fastapi', 'uvicorn', 'processors', 'aiokafka', 'cedarpy'}\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
              "assert not loaded, loaded\n"
              "from ledger import Client, Gate, verify_bundle, AuthorizationRequested\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy - {'aiokafka'})\n"
              "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_every_sdk_name_is_the_object_of_the_module_that_holds_it() -> None:
    import importlib

    import ledger
    homes = ledger._HOME
    assert sorted(ledger.__all__) == sorted(homes)
    for name in ledger.__all__:
        assert getattr(ledger, name) is getattr(importlib.import_module(homes[name]), name)
