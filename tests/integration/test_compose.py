"""docker-compose.yml and deploy/ checked against the code, since no Docker engine runs here.

Every check is a function ``check_*(...) -> list[str]`` returning the problems it found (empty =
fine), so the negative tests at the bottom can feed it a broken compose dict and see it fail.
What is checked (DESIGN.md section 8, docs/production.md):

* each govledger service runs a real ``govledger`` subcommand with options it accepts (the CLI
  is introspected, and ``govledger <subcommand> --help`` must exit 0);
* each ``GOVLEDGER_*`` variable is a ``Settings`` field, and the values validate;
* published ports, ``--api-port``, ``GOVLEDGER_API_PORT`` and the health probe agree;
* ``depends_on`` targets exist, their conditions make sense, profiles do not cross;
* named volumes are declared; ``--data`` and ``KAFKA_LOG_DIRS`` sit on a volume;
* Kafka runs KRaft with its essential settings, one cluster id, voters that exist, and the
  bootstrap lists exactly the brokers of one cluster; the ``ha`` profile has 3 brokers with
  replication 3 / min.insync.replicas 2;
* deploy/Dockerfile copies only what exists, runs as non-root, with ``ENTRYPOINT
  ["govledger"]``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import ValidationError

from ledger.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SASL_EXAMPLE = ROOT / "deploy" / "kafka" / "sasl-ssl.env.example"
GOVLEDGER_BIN = Path(sys.executable).parent / "govledger"
PREFIX = "GOVLEDGER_"
ROLES = (("topics", "create"), ("init",), ("processor",), ("sequencer",), ("api",))
KRAFT_ESSENTIALS = ("KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_CONTROLLER_QUORUM_VOTERS",
                    "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
                    "KAFKA_CONTROLLER_LISTENER_NAMES", "CLUSTER_ID", "KAFKA_LOG_DIRS")
#: command-line option -> the setting it must agree with when both are given
FLAG_SETTING = {"--data": "GOVLEDGER_DATA_DIR", "--partitions": "GOVLEDGER_PARTITIONS",
                "--replication": "GOVLEDGER_REPLICATION_FACTOR",
                "--api-host": "GOVLEDGER_API_HOST", "--api-port": "GOVLEDGER_API_PORT"}
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")

Compose = dict[str, Any]
Service = Mapping[str, Any]
CliSpec = Mapping[tuple[str, ...], frozenset[str]]


# ----------------------------------------------------------------------------- reading

def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def services(compose: Compose) -> dict[str, Service]:
    return dict(compose.get("services") or {})


def env_of(svc: Service) -> dict[str, str]:
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def is_kafka(svc: Service) -> bool:
    return str(svc.get("image", "")).startswith("apache/kafka")


def is_govledger(svc: Service) -> bool:
    build = svc.get("build")
    dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
    return dockerfile == "deploy/Dockerfile" or str(svc.get("image", "")).startswith("govledger")


def command_of(svc: Service) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def subcommand(cmd: list[str]) -> tuple[str, ...]:
    path: list[str] = []
    for token in cmd:
        if token.startswith("-"):
            break
        path.append(token)
    return tuple(path)


def flags(cmd: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for i, token in enumerate(cmd):
        if token.startswith("--"):
            value = cmd[i + 1] if i + 1 < len(cmd) and not cmd[i + 1].startswith("-") else ""
            found[token] = value
    return found


def profiles(svc: Service) -> frozenset[str]:
    return frozenset(svc.get("profiles") or ())


def volume_mounts(svc: Service) -> list[tuple[str, str]]:
    """(source, target) of every mount; short "src:dst[:mode]" or long syntax."""
    mounts = []
    for item in svc.get("volumes") or []:
        if isinstance(item, dict):
            mounts.append((str(item.get("source", "")), str(item["target"])))
        else:
            parts = str(item).split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return mounts


def is_named(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def container_ports(svc: Service) -> list[int]:
    ports = []
    for item in svc.get("ports") or []:
        target = item.get("target") if isinstance(item, dict) else str(item).split(":")[-1]
        ports.append(int(str(target).split("/")[0]))
    return ports


def api_port(svc: Service) -> str | None:
    return flags(command_of(svc)).get("--api-port") or env_of(svc).get("GOVLEDGER_API_PORT")


def introspect_cli() -> dict[tuple[str, ...], frozenset[str]]:
    """{subcommand path: accepted options} of the real ``govledger`` typer app."""
    from ledger.cli import app

    spec: dict[tuple[str, ...], frozenset[str]] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        # Duck-typed: typer >= 0.2x ships its own copy of click, so isinstance checks against
        # the `click` package would see no groups and no options.
        if isinstance(getattr(cmd, "commands", None), dict):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
            return
        opts = {o for p in cmd.params if getattr(p, "param_type_name", "") == "option"
                for o in (*p.opts, *p.secondary_opts)}
        spec[path] = frozenset(opts | {"--help"})

    walk(typer.main.get_command(app), ())
    return spec


# ----------------------------------------------------------------------------- checks

def check_commands(compose: Compose, cli: CliSpec) -> list[str]:
    """Each govledger service runs a real subcommand with accepted options; --data on a volume."""
    problems = []
    for name, svc in services(compose).items():
        if not is_govledger(svc):
            continue
        cmd = command_of(svc)
        path = subcommand(cmd)
        if path not in cli:
            problems.append(f"{name}: `govledger {' '.join(path)}` is not a CLI command")
            continue
        for flag in flags(cmd):
            if flag not in cli[path]:
                problems.append(f"{name}: `govledger {' '.join(path)}` has no option {flag}")
        data = flags(cmd).get("--data")
        if data is not None and data not in {t for s, t in volume_mounts(svc) if is_named(s)}:
            problems.append(f"{name}: --data {data} is not on a named volume")
    return problems


def check_settings_env(compose: Compose, fields: Mapping[str, object]) -> list[str]:
    """GOVLEDGER_* names are Settings fields, values validate, flags agree, no literal secret."""
    problems = []
    for name, svc in services(compose).items():
        env = {k: v for k, v in env_of(svc).items() if k.startswith(PREFIX)}
        if is_govledger(svc) and "GOVLEDGER_KAFKA_BOOTSTRAP" not in env:
            problems.append(f"{name}: no GOVLEDGER_KAFKA_BOOTSTRAP (would start the embedded "
                            "broker inside the container)")
        unknown = [k for k in env if k[len(PREFIX):].lower() not in fields]
        problems += [f"{name}: {k} is not a Settings field" for k in unknown]
        password = env.get("GOVLEDGER_KAFKA_SASL_PASSWORD")
        if password is not None and not password.startswith("${"):
            problems.append(f"{name}: GOVLEDGER_KAFKA_SASL_PASSWORD is a literal secret")
        if not unknown and password is None:
            try:
                Settings(**{k[len(PREFIX):].lower(): v for k, v in env.items()})
            except ValidationError as exc:
                problems.append(f"{name}: settings do not validate: {exc.errors()[0]['msg']}")
        for flag, value in flags(command_of(svc)).items():
            setting = FLAG_SETTING.get(flag)
            if setting in env and env[setting] != value:
                problems.append(f"{name}: {flag} {value} disagrees with {setting}={env[setting]}")
    return problems


def check_ports(compose: Compose) -> list[str]:
    """Published ports are the API port; the probe asks that port; processors stay scalable."""
    problems = []
    for name, svc in services(compose).items():
        if not is_govledger(svc):
            continue
        role, port = subcommand(command_of(svc)), api_port(svc)
        published = container_ports(svc)
        if role == ("api",) and (port in (None, "0") or published != [int(port or 0)]):
            problems.append(f"{name}: api port {port} is not the published port {published}")
        if role != ("api",) and published:
            problems.append(f"{name}: publishes {published} but serves no HTTP")
        probe = " ".join(map(str, (svc.get("healthcheck") or {}).get("test") or []))
        for probe_port in re.findall(r"://[^/:'\"]+:(\d+)/", probe):
            if probe_port != port:
                problems.append(f"{name}: health probe asks port {probe_port}, API is on {port}")
        if role == ("processor",) and ("container_name" in svc or svc.get("ports")):
            problems.append(f"{name}: a processor must scale (no container_name, no host port)")
        replicas = (svc.get("deploy") or {}).get("replicas", 1)
        if role == ("sequencer",) and (replicas != 1 or "scale" in svc):
            problems.append(f"{name}: the sequencer is the single writer: exactly 1 replica")
    return problems


def check_depends_on(compose: Compose) -> list[str]:
    """Targets exist; healthy needs a healthcheck; completed needs a one-shot; no profile leak."""
    problems, svcs = [], services(compose)
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or {}
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) \
            else deps
        for target, spec in deps.items():
            condition = (spec or {}).get("condition", "service_started")
            if target not in svcs:
                problems.append(f"{name}: depends on unknown service {target}")
                continue
            if condition not in CONDITIONS:
                problems.append(f"{name}: unknown condition {condition} on {target}")
            if condition == "service_healthy" and "healthcheck" not in svcs[target]:
                problems.append(f"{name}: waits for {target} healthy, which has no healthcheck")
            if (condition == "service_completed_successfully"
                    and str(svcs[target].get("restart", "no")) != "no"):
                problems.append(f"{name}: waits for {target} to complete, which restarts")
            mine, theirs = profiles(svc), profiles(svcs[target])
            if theirs and not (mine and mine & theirs):
                problems.append(f"{name}: depends on {target} of profiles {sorted(theirs)}")
    return problems


def check_volumes(compose: Compose) -> list[str]:
    declared = set((compose.get("volumes") or {}).keys())
    return [f"{name}: volume {source} is not declared"
            for name, svc in services(compose).items()
            for source, _ in volume_mounts(svc) if is_named(source) and source not in declared]


def kafka_clusters(compose: Compose) -> dict[str, dict[str, Service]]:
    clusters: dict[str, dict[str, Service]] = {}
    for name, svc in services(compose).items():
        if is_kafka(svc):
            clusters.setdefault(env_of(svc).get("CLUSTER_ID", ""), {})[name] = svc
    return clusters


def check_kafka(compose: Compose) -> list[str]:
    """KRaft essentials, pinned image, valid cluster ids, voters and bootstrap that exist."""
    problems = []
    clusters = kafka_clusters(compose)
    for cluster_id, members in clusters.items():
        try:
            valid_id = len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
        except ValueError:
            valid_id = False
        if not valid_id:
            problems.append(f"{sorted(members)}: CLUSTER_ID {cluster_id!r} is not a 16-byte "
                            "base64url UUID")
        ids = {env_of(s).get("KAFKA_NODE_ID"): n for n, s in members.items()}
        if len(ids) != len(members):
            problems.append(f"{sorted(members)}: duplicate KAFKA_NODE_ID")
        for name, svc in members.items():
            env = env_of(svc)
            problems += [f"{name}: missing {k}" for k in KRAFT_ESSENTIALS if not env.get(k)]
            if not re.fullmatch(r"apache/kafka:[34]\.\d+\.\d+", str(svc.get("image"))):
                problems.append(f"{name}: image {svc.get('image')} is not a pinned 3.x/4.x tag")
            if "healthcheck" not in svc:
                problems.append(f"{name}: no healthcheck")
            on_volume = {t for s, t in volume_mounts(svc) if is_named(s)}
            if env.get("KAFKA_LOG_DIRS") not in on_volume:
                problems.append(f"{name}: KAFKA_LOG_DIRS is not on a named volume")
            for voter in filter(None, env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",")):
                node, _, host = voter.partition("@")
                if ids.get(node) != host.split(":")[0]:
                    problems.append(f"{name}: voter {voter} is not node {node} of this cluster")
    advertised = {name: set(re.findall(r"://([^,]+)", env_of(svc)["KAFKA_ADVERTISED_LISTENERS"]))
                  for c in clusters.values() for name, svc in c.items()
                  if env_of(svc).get("KAFKA_ADVERTISED_LISTENERS")}
    for name, svc in services(compose).items():
        bootstrap = env_of(svc).get("GOVLEDGER_KAFKA_BOOTSTRAP")
        if not is_govledger(svc) or not bootstrap:
            continue
        hosts = {addr.split(":")[0] for addr in bootstrap.split(",")}
        for addr in bootstrap.split(","):
            if addr not in advertised.get(addr.split(":")[0], set()):
                problems.append(f"{name}: bootstrap {addr} is not an advertised Kafka listener")
        if not any(hosts == set(members) for members in clusters.values()):
            problems.append(f"{name}: bootstrap {bootstrap} is not exactly one cluster's brokers")
        wanted = [env_of(svc).get("GOVLEDGER_REPLICATION_FACTOR", "1"),
                  flags(command_of(svc)).get("--replication", "1")]
        if any(int(w) > len(hosts) for w in wanted):
            problems.append(f"{name}: replication {wanted} exceeds {len(hosts)} broker(s)")
    return problems


def check_ha(compose: Compose) -> list[str]:
    """Profile "ha": 3 brokers, replication 3, min.insync.replicas 2, every role present."""
    problems = []
    ha = {n: s for n, s in services(compose).items() if "ha" in profiles(s)}
    brokers = {n: env_of(s) for n, s in ha.items() if is_kafka(s)}
    if len(brokers) != 3:
        problems.append(f"ha profile has {len(brokers)} Kafka brokers, not 3")
    want = {"KAFKA_DEFAULT_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2"}
    problems += [f"{n}: {k}={env.get(k)}, want {v}" for n, env in brokers.items()
                 for k, v in want.items() if env.get(k) != v]
    for name, svc in ha.items():
        if is_govledger(svc):
            replication = env_of(svc).get("GOVLEDGER_REPLICATION_FACTOR")
            if replication != "3":
                problems.append(f"{name}: GOVLEDGER_REPLICATION_FACTOR={replication}, want 3")
            if flags(command_of(svc)).get("--replication", "3") != "3":
                problems.append(f"{name}: --replication is not 3")
    return problems + check_roles(ha, "ha profile")


def check_roles(svcs: Mapping[str, Service], label: str) -> list[str]:
    present = {subcommand(command_of(s)) for s in svcs.values() if is_govledger(s)}
    return [f"{label}: no `govledger {' '.join(r)}` service" for r in ROLES if r not in present]


def check_dockerfile(text: str, root: Path) -> list[str]:
    """python:3.11-slim base, COPY sources exist, non-root USER, ENTRYPOINT ["govledger"]."""
    problems = []
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [[*ln.split(None, 1), ""][:2] for ln in lines
                    if ln.strip() and not ln.lstrip().startswith("#")]
    args = dict(a.strip().split("=", 1) for i, a in instructions
                if i.upper() == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), a.split()[0])
             for i, a in instructions if i.upper() == "FROM"]
    if not bases or any(not b.startswith("python:3.11-slim") for b in bases):
        problems.append(f"base images {bases} are not python:3.11-slim")
    for instr, rest in instructions:
        if instr.upper() in ("COPY", "ADD") and "--from=" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--") and not (root / src).exists():
                    problems.append(f"COPY source {src} does not exist in the repository")
        if instr.upper() in ("ENV", "ARG") and re.search(r"PASSWORD|SECRET|TOKEN|PRIVATE", rest,
                                                         re.I):
            problems.append(f"{instr} looks like a baked-in secret: {rest}")
    users = [a.strip() for i, a in instructions if i.upper() == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image does not end as a non-root USER")
    entry = [a for i, a in instructions if i.upper() == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1]) != ["govledger"]:
        problems.append(f"ENTRYPOINT is {entry}, not [\"govledger\"]")
    return problems


def check_env_file(text: str, fields: Mapping[str, object]) -> list[str]:
    """An env example: Settings names only, no password value, a valid combination."""
    env = dict(ln.split("=", 1) for ln in text.splitlines()
               if ln.strip() and not ln.startswith("#"))
    problems = [f"{k} is not a Settings field" for k in env
                if not k.startswith(PREFIX) or k[len(PREFIX):].lower() not in fields]
    if "GOVLEDGER_KAFKA_SASL_PASSWORD" in env:
        problems.append("the example holds a SASL password value")
    if not problems:
        values = {k[len(PREFIX):].lower(): v for k, v in env.items() if "_SSL_" not in k}
        try:
            Settings(**values, kafka_sasl_password="placeholder")
        except ValidationError as exc:
            problems.append(f"settings do not validate: {exc.errors()[0]['msg']}")
    return problems


# ----------------------------------------------------------------------------- tests

@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() also reads the environment: keep the test runner's GOVLEDGER_* out."""
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
    assert check_dockerfile(DOCKERFILE.read_text(encoding="utf-8"), ROOT) == []


def test_sasl_ssl_example_uses_real_settings() -> None:
    assert check_env_file(SASL_EXAMPLE.read_text(encoding="utf-8"), Settings.model_fields) == []


# --------------------------------------------------------- negative: each check can fail

FAKE_CLI: CliSpec = {r: frozenset({"--help", "--data", "--partitions", "--replication",
                                   "--api-host", "--api-port"}) for r in ROLES}


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
    ("services/processor/depends_on/sequencer", {"condition": "service_healthy"}, "deps",
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
