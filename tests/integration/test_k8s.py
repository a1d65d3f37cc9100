"""deploy/k8s: every manifest validates against the Kubernetes 1.32 OpenAPI schemas
(kubernetes-validate, strict: unknown fields refused), and the structure issue 19 asks for
holds: probes, limits and a restricted securityContext on every container, each signing key
mounted only where it is used, one replica, a PodDisruptionBudget selecting the pod,
NetworkPolicies that deny by default. Each check has a negative test. No cluster runs here:
what the kubelet, the admission controllers and Strimzi would do is not observed."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.integration

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
KEY_VOLUMES = {"authority-key": {"processor", "init"}, "ledger-key": {"sequencer", "init"},
               "operator-key": {"init"}}
Doc = dict[str, Any]


def manifests() -> list[Doc]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def containers(pod: Doc) -> Iterator[tuple[Doc, bool]]:
    """(container, is_init) of a pod spec."""
    for c in pod.get("initContainers") or []:
        yield c, True
    for c in pod["containers"]:
        yield c, False


def check_containers(docs: list[Doc]) -> list[str]:
    problems = []
    for sts in of_kind(docs, "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        ctx = pod.get("securityContext") or {}
        if not ctx.get("runAsNonRoot") or (ctx.get("seccompProfile") or {}).get(
                "type") != "RuntimeDefault":
            problems.append("pod: not runAsNonRoot with the RuntimeDefault seccomp profile")
        if sts["spec"].get("replicas") != 1:
            problems.append("the StatefulSet holds the one sequencer: replicas must be 1")
        for c, is_init in containers(pod):
            name = c["name"]
            limits = (c.get("resources") or {}).get("limits") or {}
            if not limits.get("cpu") or not limits.get("memory"):
                problems.append(f"{name}: no cpu and memory limits")
            sc = c.get("securityContext") or {}
            if (sc.get("readOnlyRootFilesystem") is not True
                    or sc.get("allowPrivilegeEscalation") is not False
                    or "ALL" not in ((sc.get("capabilities") or {}).get("drop") or [])):
                problems.append(f"{name}: securityContext is not read-only, no-escalation, "
                                "drop ALL")
            if not is_init and not (c.get("livenessProbe") and c.get("readinessProbe")):
                problems.append(f"{name}: no liveness and readiness probes")
    return problems


def check_keys(docs: list[Doc]) -> list[str]:
    problems = []
    for sts in of_kind(docs, "StatefulSet"):
        for c, is_init in containers(sts["spec"]["template"]["spec"]):
            for mount in c.get("volumeMounts") or []:
                allowed = KEY_VOLUMES.get(mount["name"])
                if allowed is None:
                    continue
                if c["name"] not in allowed:
                    problems.append(f"{c['name']}: mounts {mount['name']}")
                elif not is_init and mount.get("readOnly") is not True:
                    problems.append(f"{c['name']}: {mount['name']} is not read-only")
    return problems


def check_disruption_and_network(docs: list[Doc]) -> list[str]:
    problems = []
    labels = [s["spec"]["template"]["metadata"]["labels"] for s in of_kind(docs, "StatefulSet")]
    pdbs = of_kind(docs, "PodDisruptionBudget")
    if not any(p["spec"]["selector"]["matchLabels"].items() <= lab.items()
               for p in pdbs for lab in labels):
        problems.append("no PodDisruptionBudget selects the govledger pod")
    policies = of_kind(docs, "NetworkPolicy")
    if not any(p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", []))
               == {"Ingress", "Egress"} and not p["spec"].get("ingress")
               and not p["spec"].get("egress") for p in policies):
        problems.append("no default-deny NetworkPolicy (all pods, ingress and egress)")
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            if not rule.get("to"):
                problems.append(f"{policy['metadata']['name']}: egress to anywhere")
    return problems


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    for doc in manifests():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_refuses_an_unknown_field() -> None:
    sts = copy.deepcopy(of_kind(manifests(), "StatefulSet")[0])
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)


def test_containers_are_probed_limited_and_restricted() -> None:
    assert check_containers(manifests()) == []


def test_each_key_is_mounted_only_where_it_is_used() -> None:
    assert check_keys(manifests()) == []


def test_disruption_budget_and_default_deny_policies() -> None:
    assert check_disruption_and_network(manifests()) == []


def _container(docs: list[Doc], name: str) -> Doc:
    pod = of_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]
    return next(c for c, _ in containers(pod) if c["name"] == name)


def _break_api_mount(docs: list[Doc]) -> None:
    _container(docs, "api")["volumeMounts"].append(
        {"name": "ledger-key", "mountPath": "/keys/ledger", "readOnly": True})


def _unprotect_processor_key(docs: list[Doc]) -> None:
    for mount in _container(docs, "processor")["volumeMounts"]:
        mount.pop("readOnly", None)


BROKEN = [
    ("probe", lambda d: _container(d, "sequencer").pop("livenessProbe"), check_containers,
     "sequencer: no liveness"),
    ("limits", lambda d: _container(d, "init")["resources"].pop("limits"), check_containers,
     "init: no cpu and memory limits"),
    ("privilege", lambda d: _container(d, "api")["securityContext"].update(
        allowPrivilegeEscalation=True), check_containers, "api: securityContext"),
    ("replicas", lambda d: of_kind(d, "StatefulSet")[0]["spec"].update(replicas=2),
     check_containers, "replicas must be 1"),
    ("api-key", _break_api_mount, check_keys, "api: mounts ledger-key"),
    ("operator-key", lambda d: _container(d, "processor")["volumeMounts"].append(
        {"name": "operator-key", "mountPath": "/keys/operator", "readOnly": True}),
     check_keys, "processor: mounts operator-key"),
    ("rw-key", _unprotect_processor_key, check_keys, "authority-key is not read-only"),
    ("pdb", lambda d: of_kind(d, "PodDisruptionBudget")[0]["spec"]["selector"].update(
        matchLabels={"app": "other"}), check_disruption_and_network, "no PodDisruptionBudget"),
    ("deny", lambda d: of_kind(d, "NetworkPolicy")[0]["spec"].update(policyTypes=["Ingress"]),
     check_disruption_and_network, "no default-deny"),
    ("egress", lambda d: of_kind(d, "NetworkPolicy")[2]["spec"]["egress"].append({}),
     check_disruption_and_network, "egress to anywhere"),
]


@pytest.mark.parametrize(("label", "mutate", "check", "expected"), BROKEN,
                         ids=[b[0] for b in BROKEN])
def test_check_catches_a_weakened_manifest(label: str, mutate: Any, check: Any,
                                           expected: str) -> None:
    docs = manifests()
    assert check(docs) == []
    mutate(docs)
    problems = check(docs)
    assert any(expected in p for p in problems), problems


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_kubectl_kustomize_builds_the_set() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in built) == sorted(d["kind"] for d in manifests())
    assert all(d["metadata"].get("namespace", "govledger") == "govledger" for d in built)


def test_strimzi_resources_name_the_cluster_the_settings_use() -> None:
    """Strimzi's CRDs are not installed here: only the shape and the names that must agree
    with the ConfigMap (cluster, listener port, user, SCRAM) are checked."""
    docs = [d for d in yaml.safe_load_all((K8S / "strimzi" / "kafka.yaml").read_text()) if d]
    assert {d["apiVersion"] for d in docs} == {"kafka.strimzi.io/v1beta2"}
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    user = next(d for d in docs if d["kind"] == "KafkaUser")
    settings = of_kind(manifests(), "ConfigMap")[0]["data"]
    cluster = kafka["metadata"]["name"]
    listener = kafka["spec"]["kafka"]["listeners"][0]
    host, port = settings["GOVLEDGER_KAFKA_BOOTSTRAP"].split(":")
    assert host == f"{cluster}-kafka-bootstrap.{kafka['metadata']['namespace']}.svc"
    assert int(port) == listener["port"] and listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert settings["GOVLEDGER_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert user["metadata"]["name"] == settings["GOVLEDGER_KAFKA_SASL_USERNAME"]
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
