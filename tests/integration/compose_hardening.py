"""Checks of docker-compose.yml's hardening, keys per role and SASL_SSL profile (issue 19).

Like ``compose_checks``: each ``check_*`` returns the problems it found, so tests can feed it
a broken compose dict and see it report the breakage. What is checked:

* every service: read-only root file system, ``cap_drop: [ALL]``,
  ``no-new-privileges:true``, a non-root ``user``, CPU and memory limits, a pids limit; a
  healthcheck on every long-running one (one-shots exit, and their dependants wait for that);
* keys per role: the processor and the monitor (it signs its alerts) mount only the
  authority key (read-only), the sequencer only the ledger key (read-only), ``init`` both,
  every other service neither; each key file
  setting lies on a mount of its own service;
* profile ``sasl``: Kafka's listeners (but the in-container controller) are SASL_SSL, every
  govledger service uses SASL_SSL with a CA file on a read-only mount, the password is
  interpolated, and the mounted secrets directory is ignored by git.
"""

from __future__ import annotations

from tests.integration.compose_checks import (
    Compose,
    Service,
    command_of,
    env_of,
    is_govledger,
    is_kafka,
    profiles,
    services,
    subcommand,
)

KEY_TARGETS = {"authority": "/keys/authority", "ledger": "/keys/ledger",
               "operator": "/keys/operator"}
ROLE_KEYS = {("processor",): {"authority"}, ("sequencer",): {"ledger"},
             ("monitor",): {"authority"},  # it signs its alerts (authority kinds, DESIGN 7)
             ("init",): {"authority", "ledger", "operator"}}  # operator: signs the genesis
KEY_SETTINGS = {"authority": "GOVLEDGER_AUTHORITY_KEY_FILE",
                "ledger": "GOVLEDGER_LEDGER_KEY_FILE",
                "operator": "GOVLEDGER_OPERATOR_KEY_FILE"}


def mounts(svc: Service) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every mount, short or long syntax."""
    found = []
    for item in svc.get("volumes") or []:
        if isinstance(item, dict):
            found.append((str(item.get("source", "")), str(item["target"]),
                          bool(item.get("read_only"))))
        else:
            parts = str(item).split(":")
            found.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def check_hardening(compose: Compose) -> list[str]:
    problems = []
    for name, svc in services(compose).items():
        if svc.get("read_only") is not True:
            problems.append(f"{name}: root file system is not read_only")
        if "ALL" not in (svc.get("cap_drop") or []):
            problems.append(f"{name}: does not cap_drop ALL")
        if "no-new-privileges:true" not in (svc.get("security_opt") or []):
            problems.append(f"{name}: no security_opt no-new-privileges:true")
        user = str(svc.get("user", "")).split(":")[0]
        if user in ("", "root", "0"):
            problems.append(f"{name}: runs as user {user or 'of the image (unchecked)'}")
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if not limits.get("cpus") or not limits.get("memory"):
            problems.append(f"{name}: no cpus and memory limits")
        if not svc.get("pids_limit"):
            problems.append(f"{name}: no pids_limit")
        if str(svc.get("restart", "no")) != "no" and not svc.get("healthcheck"):
            problems.append(f"{name}: a long-running service without a healthcheck")
    return problems


def check_keys_per_role(compose: Compose) -> list[str]:
    problems = []
    for name, svc in services(compose).items():
        role = subcommand(command_of(svc)) if is_govledger(svc) else ("kafka",)
        wanted = ROLE_KEYS.get(role, set())
        held = {key for key, target in KEY_TARGETS.items()
                for _, mounted, _ in mounts(svc) if mounted == target}
        problems += [f"{name}: `{' '.join(role)}` mounts the {key} key" for key in held - wanted]
        problems += [f"{name}: `{' '.join(role)}` lacks the {key} key" for key in wanted - held]
        for _, target, read_only in mounts(svc):
            if target in KEY_TARGETS.values() and role != ("init",) and not read_only:
                problems.append(f"{name}: key volume {target} is not read-only")
        env = env_of(svc)
        for key, setting in KEY_SETTINGS.items():
            path = env.get(setting)
            if key in wanted and not (path or "").startswith(KEY_TARGETS[key] + "/"):
                problems.append(f"{name}: {setting}={path} is not on the {key} key volume")
            if key not in wanted and path:
                problems.append(f"{name}: sets {setting} but must not hold that key")
    return problems


def check_sasl_profile(compose: Compose, gitignore: str) -> list[str]:
    problems = []
    sasl = {n: s for n, s in services(compose).items() if "sasl" in profiles(s)}
    brokers = {n: s for n, s in sasl.items() if is_kafka(s)}
    if not brokers:
        problems.append("profile sasl has no Kafka broker")
    for name, svc in brokers.items():
        env = env_of(svc)
        for listener in env.get("KAFKA_LISTENERS", "").split(","):
            if not listener.startswith(("SASL_SSL://", "CONTROLLER://")):
                problems.append(f"{name}: listener {listener} is not SASL_SSL")
        if "SASL_SSL" not in env.get("KAFKA_INTER_BROKER_LISTENER_NAME", ""):
            problems.append(f"{name}: brokers do not talk SASL_SSL to each other")
    for name, svc in sasl.items():
        if not is_govledger(svc):
            continue
        env = env_of(svc)
        if env.get("GOVLEDGER_KAFKA_SECURITY_PROTOCOL") != "SASL_SSL":
            problems.append(f"{name}: GOVLEDGER_KAFKA_SECURITY_PROTOCOL is not SASL_SSL")
        if not env.get("GOVLEDGER_KAFKA_SASL_PASSWORD", "").startswith("${"):
            problems.append(f"{name}: the SASL password is not interpolated")
        cafile = env.get("GOVLEDGER_KAFKA_SSL_CAFILE", "")
        if not any(cafile.startswith(t + "/") and ro for _, t, ro in mounts(svc)):
            problems.append(f"{name}: the CA file {cafile or '(unset)'} is not on a "
                            "read-only mount")
    ignored = [line.strip().rstrip("/") for line in gitignore.splitlines()
               if line.strip() and not line.startswith("#")]
    for name, svc in sasl.items():
        for source, _, _ in mounts(svc):
            path = source.removeprefix("./")
            if source.startswith("./") and not any(path == p or path.startswith(p + "/")
                                                   for p in ignored):
                problems.append(f"{name}: mounts {source}, which git does not ignore")
    return problems
