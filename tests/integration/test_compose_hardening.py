"""docker-compose.yml: hardening, keys per role, the SASL_SSL profile and its certificate
script, and the file as `docker-compose config` reads it (compose_hardening says what each
check covers; each has a negative test that breaks the input)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.hazmat.primitives.serialization.pkcs12 import load_key_and_certificates

from ledger.config import Settings
from ledger.kafka.clients import client_options
from tests.integration.compose_checks import ROOT, Compose, load_compose
from tests.integration.compose_hardening import (
    check_hardening,
    check_keys_per_role,
    check_sasl_profile,
)

pytestmark = pytest.mark.integration

GITIGNORE = (ROOT / ".gitignore").read_text(encoding="utf-8")
MAKE_CERTS = ROOT / "deploy" / "kafka" / "make-certs.sh"


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


def test_every_service_is_hardened(compose: Compose) -> None:
    assert check_hardening(compose) == []


def test_each_role_mounts_only_its_own_key(compose: Compose) -> None:
    assert check_keys_per_role(compose) == []


def test_sasl_profile_talks_sasl_ssl_everywhere(compose: Compose) -> None:
    assert check_sasl_profile(compose, GITIGNORE) == []


BROKEN: list[tuple[str, Any, str, str]] = [
    ("services/api/read_only", False, "hardening", "not read_only"),
    ("services/kafka/cap_drop", [], "hardening", "cap_drop ALL"),
    ("services/sequencer/security_opt", [], "hardening", "no-new-privileges"),
    ("services/processor/user", "0:0", "hardening", "runs as user 0"),
    ("services/kafka-2/deploy", {}, "hardening", "no cpus and memory limits"),
    ("services/api/pids_limit", None, "hardening", "no pids_limit"),
    ("services/processor/healthcheck", None, "hardening", "without a healthcheck"),
    ("services/api/volumes", ["govledger-data:/data", "authority-key:/keys/authority:ro"],
     "keys", "mounts the authority key"),
    ("services/processor/volumes", ["govledger-data:/data", "authority-key:/keys/authority:ro",
                                    "ledger-key:/keys/ledger:ro"], "keys",
     "mounts the ledger key"),
    ("services/sequencer/volumes", ["govledger-data:/data"], "keys", "lacks the ledger key"),
    ("services/processor/volumes", ["govledger-data:/data", "authority-key:/keys/authority:ro",
                                    "operator-key:/keys/operator:ro"], "keys",
     "mounts the operator key"),
    ("services/init/volumes", ["govledger-data:/data", "authority-key:/keys/authority",
                               "ledger-key:/keys/ledger"], "keys", "lacks the operator key"),
    ("services/sequencer/volumes", ["govledger-data:/data", "ledger-key:/keys/ledger"], "keys",
     "is not read-only"),
    ("services/processor/environment/GOVLEDGER_AUTHORITY_KEY_FILE", "/data/keys/authority.key",
     "keys", "is not on the authority key volume"),
    ("services/api/environment/GOVLEDGER_LEDGER_KEY_FILE", "/keys/ledger/ledger.key", "keys",
     "must not hold that key"),
    ("services/kafka-sasl/environment/KAFKA_LISTENERS", "PLAINTEXT://:19092,CONTROLLER://:9093",
     "sasl", "is not SASL_SSL"),
    ("services/api-sasl/environment/GOVLEDGER_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT",
     "sasl", "is not SASL_SSL"),
    ("services/processor-sasl/environment/GOVLEDGER_KAFKA_SASL_PASSWORD", "hunter2", "sasl",
     "not interpolated"),
    ("services/sequencer-sasl/volumes", ["govledger-data-sasl:/data",
                                         "ledger-key-sasl:/keys/ledger:ro"], "sasl",
     "not on a read-only mount"),
    ("services/kafka-sasl/volumes", ["kafka-sasl-data:/var/lib/kafka/data",
                                     "./deploy/kafka:/etc/kafka/secrets:ro"], "sasl",
     "which git does not ignore"),
]
CHECKS = {"hardening": check_hardening, "keys": check_keys_per_role,
          "sasl": lambda c: check_sasl_profile(c, GITIGNORE)}


def _set(compose: Compose, path: str, value: Any) -> None:
    *parents, last = path.split("/")
    node = compose
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize(("path", "value", "check", "expected"), BROKEN,
                         ids=[f"{b[2]}:{b[0]}" for b in BROKEN])
def test_check_catches_a_weakened_compose(compose: Compose, path: str, value: Any,
                                          check: str, expected: str) -> None:
    assert CHECKS[check](compose) == []
    broken = json.loads(json.dumps(compose))
    _set(broken, path, value)
    problems = CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """`docker-compose config` (v1.29, the compose-spec schema of its release, from Debian's
    docker-compose package) on every profile. That release predates the top-level `name`,
    which is dropped from the copy it reads."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    data = load_compose()
    data.pop("name")
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(yaml.safe_dump(data), encoding="utf-8")
    for profile in ("", "ha", "sasl"):
        args = [binary, "--project-directory", str(ROOT), "-f", str(copy)]
        args += ["--profile", profile] if profile else []
        result = subprocess.run([*args, "config", "-q"], capture_output=True, text=True,
                                timeout=120, check=False,
                                env={"PATH": "/usr/bin:/bin",
                                     "GOVLEDGER_KAFKA_SASL_PASSWORD": "interpolated"})
        assert result.returncode == 0, result.stderr


def test_make_certs_gives_a_broker_certificate_the_client_verifies(tmp_path: Path) -> None:
    """The script's CA, keystore and password files work together: a TLS server with the
    keystore's key and certificate is accepted by the SSL context govledger's Kafka clients
    build from GOVLEDGER_KAFKA_SSL_CAFILE, for the broker's compose host name."""
    script = tmp_path / "kafka" / "make-certs.sh"
    script.parent.mkdir()
    shutil.copy(MAKE_CERTS, script)
    subprocess.run(["bash", str(script)], check=True, capture_output=True, timeout=120)
    secrets = tmp_path / "kafka" / "secrets"
    password = (secrets / "broker" / "keystore_creds").read_bytes()
    key, cert, _ = load_key_and_certificates(
        (secrets / "broker" / "kafka.keystore.p12").read_bytes(), password)
    assert key is not None and cert is not None
    pem = tmp_path / "server.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                    + cert.public_bytes(Encoding.PEM))
    client_password = (secrets / "client.env").read_text().strip().split("=", 1)[1]
    assert f'user_govledger="{client_password}"' in (
        secrets / "broker" / "kafka_server_jaas.conf").read_text()
    settings = Settings(kafka_bootstrap="kafka-sasl:19094", kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="PLAIN", kafka_sasl_username="govledger",
                        kafka_sasl_password=client_password,
                        kafka_ssl_cafile=secrets / "client" / "ca.pem")
    client_context = client_options(settings)["ssl_context"]
    assert isinstance(client_context, ssl.SSLContext)
    assert _handshake(pem, client_context, "kafka-sasl") is None
    assert "mismatch" in str(_handshake(pem, client_context, "kafka-elsewhere"))


def _handshake(server_pem: Path, client: ssl.SSLContext, name: str) -> Exception | None:
    """One TLS handshake on loopback: the server presents ``server_pem``; the client checks
    it for ``name``. Returns the client's error, or None."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(server_pem)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate: its error is what the test reads
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname()) as raw, \
                    client.wrap_socket(raw, server_hostname=name):
                return None
        except ssl.SSLError as exc:
            return exc
        finally:
            thread.join(timeout=10)
