"""Checks of docker-compose.yml and deploy/ against the code (no Docker engine runs here).

Every check is a function ``check_*(...) -> list[str]`` returning the problems it found (empty
= fine), so tests can feed it a broken compose dict and see it fail
(tests/integration/test_compose.py). What is checked (DESIGN.md section 8,
docs/production.md):

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
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from ledger.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
SASL_EXAMPLE = ROOT / "deploy" / "kafka" / "sasl-ssl.env.example"
PREFIX = "GOVLEDGER_"
ROLES = (("topics", "create"), ("init",), ("processor",), ("sequencer",), ("monitor",),
         ("api",))
KRAFT_ESSENTIALS = ("KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_CONTROLLER_QUORUM_VOTERS",
                    "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
                    "KAFKA_CONTROLLER_LISTENER_NAMES", "CLUSTER_ID", "KAFKA_LOG_DIRS")
#: command-line option -> the setting it must agree with when both are given
FLAG_SETTING = {"--data": "GOVLEDGER_DATA_DIR", "--partitions": "GOVLEDGER_PARTITIONS",
                "--replication": "GOVLEDGER_REPLICATION_FACTOR",
                "--api-host": "GOVLEDGER_API_HOST", "--api-port": "GOVLEDGER_API_PORT",
                "--kafka": "GOVLEDGER_KAFKA_BOOTSTRAP"}
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
        if is_govledger(svc) and not unknown and password is None:
            try:
                Settings.model_validate({k[len(PREFIX):].lower(): v for k, v in env.items()})
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
        # the monitor has no API: its probe asks its own metrics port
        served = env_of(svc).get("GOVLEDGER_MONITOR_METRICS_PORT") if role == ("monitor",) \
            else port
        for probe_port in re.findall(r"://[^/:'\"]+:(\d+)/", probe):
            if probe_port != served:
                problems.append(f"{name}: health probe asks port {probe_port}, it serves "
                                f"{served}")
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


def dockerfile_instructions(text: str) -> list[list[str]]:
    """[INSTRUCTION, rest] per instruction, continuation lines joined, comments dropped."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    return [[*ln.split(None, 1), ""][:2] for ln in lines
            if ln.strip() and not ln.lstrip().startswith("#")]


def copy_sources(text: str) -> list[str]:
    """Build-context paths the Dockerfile copies (not ``COPY --from=stage``)."""
    return [src for instr, rest in dockerfile_instructions(text)
            if instr.upper() in ("COPY", "ADD") and "--from=" not in rest
            for src in rest.split()[:-1] if not src.startswith("--")]


def check_dockerignore(dockerfile: str, ignore: str) -> list[str]:
    """An allow-list .dockerignore ("*" then "!path") must re-include every COPY source."""
    rules = [ln.strip() for ln in ignore.splitlines() if ln.strip() and not ln.startswith("#")]
    if "*" not in rules:
        return ["the .dockerignore is not an allow-list (no '*' rule)"]
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    return [f"COPY source {src} is excluded by the .dockerignore"
            for src in copy_sources(dockerfile) if src.rstrip("/") not in allowed]


def check_dockerfile(text: str, root: Path) -> list[str]:
    """python:3.11-slim base, COPY sources exist, non-root USER, ENTRYPOINT ["govledger"]."""
    problems = []
    instructions = dockerfile_instructions(text)
    args = dict(a.strip().split("=", 1) for i, a in instructions
                if i.upper() == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), a.split()[0])
             for i, a in instructions if i.upper() == "FROM"]
    if not bases or any(not b.startswith("python:3.11-slim") for b in bases):
        problems.append(f"base images {bases} are not python:3.11-slim")
    problems += [f"COPY source {src} does not exist in the repository"
                 for src in copy_sources(text) if not (root / src).exists()]
    for instr, rest in instructions:
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
            Settings.model_validate({**values, "kafka_sasl_password": "placeholder"})
        except ValidationError as exc:
            problems.append(f"settings do not validate: {exc.errors()[0]['msg']}")
    return problems
