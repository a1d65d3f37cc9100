"""docker-compose.yml, deploy/Dockerfile and deploy/kafka/ checked against the code.

No Docker engine runs here: the checks in ``compose_checks`` parse the files and compare them
with the real CLI and ``Settings``; the negative tests break each input and expect the matching
check to report it, so no check can pass vacuously.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.config import Settings
from tests.integration.compose_checks import (
    DOCKERFILE,
    DOCKERIGNORE,
    PREFIX,
    ROLES,
    ROOT,
    SASL_EXAMPLE,
    CliSpec,
    Compose,
    check_commands,
    check_depends_on,
    check_dockerfile,
    check_dockerignore,
    check_env_file,
    check_ha,
    check_kafka,
    check_ports,
    check_roles,
    check_settings_env,
    check_volumes,
    command_of,
    introspect_cli,
    is_govledger,
    load_compose,
    profiles,
    services,
    subcommand,
)

pytestmark = pytest.mark.integration

GOVLEDGER_BIN = Path(sys.executable).parent / "govledger"


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings validation also reads the environment: keep the runner's GOVLEDGER_* out."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


def _compose_roles() -> list[tuple[str, ...]]:
    return sorted({subcommand(command_of(s)) for s in services(load_compose()).values()
                   if is_govledger(s)})


def test_every_command_is_a_real_cli_command(compose: Compose) -> None:
    assert check_commands(compose, introspect_cli()) == []


@pytest.mark.parametrize("path", _compose_roles(), ids=" ".join)
def test_govledger_subcommand_answers_help(path: tuple[str, ...]) -> None:
    assert GOVLEDGER_BIN.is_file(), f"{GOVLEDGER_BIN} missing: pip install -e ."
    result = subprocess.run([str(GOVLEDGER_BIN), *path, "--help"], capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_environment_matches_settings(compose: Compose) -> None:
    assert check_settings_env(compose, Settings.model_fields) == []


def test_ports_volumes_and_dependencies(compose: Compose) -> None:
    assert check_ports(compose) + check_volumes(compose) + check_depends_on(compose) == []


def test_kafka_is_kraft_and_bootstrap_points_at_it(compose: Compose) -> None:
    assert check_kafka(compose) == []


def test_default_stack_has_every_role(compose: Compose) -> None:
    default = {n: s for n, s in services(compose).items() if not profiles(s)}
    assert check_roles(default, "default") == []


def test_ha_profile(compose: Compose) -> None:
    assert check_ha(compose) == []


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert check_dockerfile(text, ROOT) == []
    assert check_dockerignore(text, DOCKERIGNORE.read_text(encoding="utf-8")) == []


def test_sasl_ssl_example_uses_real_settings() -> None:
    assert check_env_file(SASL_EXAMPLE.read_text(encoding="utf-8"), Settings.model_fields) == []


# --------------------------------------------------------- negative: each check can fail

FAKE_CLI: CliSpec = {r: frozenset({"--help", "--data", "--partitions", "--replication",
                                   "--api-host", "--api-port",
                                   *(("--genesis",) if r == ("init",) else ())})
                     for r in ROLES}


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    """A mutation setting compose[a][b][c] = value (value None deletes the key)."""
    def mutate(c: Compose) -> None:
        *parents, last = path.split("/")
        node = c
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return mutate


BROKEN = [
    ("services/processor/command", ["process", "--data", "/data"], "commands",
     "is not a CLI command"),
    ("services/api/command", ["api", "--port", "8080"], "commands", "has no option --port"),
    ("services/sequencer/command", ["sequencer", "--data", "/ledger"], "commands",
     "not on a named volume"),
    ("services/init/environment/GOVLEDGER_KAFKA_BOOTSTRAPS", "kafka:19092", "env",
     "is not a Settings field"),
    ("services/init/environment/GOVLEDGER_PARTITIONS", "zero", "env", "do not validate"),
    ("services/topic-init/environment/GOVLEDGER_PARTITIONS", "8", "env", "disagrees"),
    ("services/api/environment/GOVLEDGER_KAFKA_SASL_PASSWORD", "hunter2", "env",
     "literal secret"),
    ("services/processor/environment/GOVLEDGER_KAFKA_BOOTSTRAP", None, "env",
     "no GOVLEDGER_KAFKA_BOOTSTRAP"),
    ("services/api/ports", ["9090:9090"], "ports", "is not the published port"),
    ("services/processor/container_name", "proc", "ports", "must scale"),
    ("services/sequencer/deploy", {"replicas": 2}, "ports", "exactly 1 replica"),
    ("services/api/healthcheck/test", ["CMD", "curl", "http://127.0.0.1:9999/readyz"],
     "ports", "health probe asks port 9999"),
    ("services/processor/depends_on/kafka-9", {"condition": "service_healthy"}, "deps",
     "unknown service kafka-9"),
    ("services/api/depends_on/init", {"condition": "service_healthy"}, "deps",
     "has no healthcheck"),
    ("services/api/depends_on/sequencer", {"condition": "service_completed_successfully"},
     "deps", "which restarts"),
    ("services/processor/depends_on/kafka-1", {"condition": "service_healthy"}, "deps",
     "of profiles ['ha']"),
    ("volumes/kafka-data", None, "volumes", "kafka-data is not declared"),
    ("services/kafka/environment/KAFKA_CONTROLLER_LISTENER_NAMES", None, "kafka",
     "missing KAFKA_CONTROLLER_LISTENER_NAMES"),
    ("services/kafka/image", "apache/kafka:latest", "kafka", "not a pinned"),
    ("services/kafka/environment/CLUSTER_ID", "not-a-cluster-id", "kafka", "16-byte"),
    ("services/kafka-3/environment/KAFKA_NODE_ID", "2", "kafka", "duplicate KAFKA_NODE_ID"),
    ("services/kafka/environment/KAFKA_CONTROLLER_QUORUM_VOTERS", "1@kafka-2:9093", "kafka",
     "is not node 1"),
    ("services/kafka/environment/KAFKA_LOG_DIRS", "/tmp/kraft", "kafka", "not on a named"),
    ("services/api/environment/GOVLEDGER_KAFKA_BOOTSTRAP", "kafka:9999", "kafka",
     "not an advertised"),
    ("services/api-ha/environment/GOVLEDGER_KAFKA_BOOTSTRAP", "kafka-1:19092", "kafka",
     "not exactly one cluster"),
    ("services/topic-init/command", ["topics", "create", "--replication", "3"], "kafka",
     "exceeds 1 broker"),
    ("services/kafka-3/profiles", None, "ha", "2 Kafka brokers, not 3"),
    ("services/kafka-2/environment/KAFKA_MIN_INSYNC_REPLICAS", "1", "ha",
     "KAFKA_MIN_INSYNC_REPLICAS=1, want 2"),
    ("services/sequencer-ha/environment/GOVLEDGER_REPLICATION_FACTOR", "1", "ha", "want 3"),
    ("services/sequencer-ha", None, "ha", "no `govledger sequencer` service"),
]
CHECKS: dict[str, Callable[[Compose], list[str]]] = {
    "commands": lambda c: check_commands(c, FAKE_CLI),
    "env": lambda c: check_settings_env(c, Settings.model_fields),
    "ports": check_ports, "deps": check_depends_on, "volumes": check_volumes,
    "kafka": check_kafka, "ha": check_ha,
}


@pytest.mark.parametrize(("path", "value", "check", "expected"), BROKEN,
                         ids=[f"{b[2]}:{b[0]}" for b in BROKEN])
def test_check_catches_broken_compose(compose: Compose, path: str, value: Any, check: str,
                                      expected: str) -> None:
    assert CHECKS[check](compose) == []              # clean before the edit
    broken = json.loads(json.dumps(compose))         # a copy without YAML-alias sharing
    _set(path, value)(broken)
    problems = CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("edit", "expected"), [
    (("ENTRYPOINT [\"govledger\"]", "ENTRYPOINT [\"python\"]"), "ENTRYPOINT is"),
    (("USER 10001:10001", "USER root"), "non-root USER"),
    (("COPY ledger/ ledger/", "COPY ledgers/ ledger/"), "ledgers/ does not exist"),
    (("ARG PYTHON_IMAGE=python:3.11-slim", "ARG PYTHON_IMAGE=python:3.12"), "python:3.11-slim"),
    (("ENV PATH=", "ENV KAFKA_PASSWORD=x PATH="), "baked-in secret"),
])
def test_dockerfile_check_catches_breakage(edit: tuple[str, str], expected: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert edit[0] in text
    problems = check_dockerfile(text.replace(edit[0], edit[1]), ROOT)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("line", "expected"), [
    ("GOVLEDGER_KAFKA_SASL_PASSWORD=hunter2", "holds a SASL password"),
    ("GOVLEDGER_KAFKA_SASL_USER=bob", "is not a Settings field"),
    ("GOVLEDGER_KAFKA_SECURITY_PROTOCOL=SSL", "do not validate"),  # SASL fields without SASL
])
def test_env_file_check_catches_breakage(line: str, expected: str) -> None:
    text = SASL_EXAMPLE.read_text(encoding="utf-8") + line + "\n"
    problems = check_env_file(text, Settings.model_fields)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("edit", "expected"), [
    (("!processors/\n", ""), "processors/ is excluded"),
    (("*\n", ""), "not an allow-list"),
])
def test_dockerignore_check_catches_breakage(edit: tuple[str, str], expected: str) -> None:
    text = DOCKERIGNORE.read_text(encoding="utf-8")
    assert edit[0] in text
    problems = check_dockerignore(DOCKERFILE.read_text(encoding="utf-8"),
                                  text.replace(edit[0], edit[1], 1))
    assert any(expected in p for p in problems), problems
