"""Settings validation, client options (SASL/SSL pass-through) and the offsets-rewound rule.

No broker needed: these check what the factories would hand to aiokafka.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ledger.config import Settings, load_settings
from ledger.errors import ConfigError, Unavailable
from ledger.kafka.clients import build_ssl_context, client_options
from ledger.kafka.offsets import verify_offsets_not_rewound

EXTERNAL = "kafka-1.internal:9093"


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "govledger-test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "client.pem", directory / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_defaults_select_the_embedded_broker_without_idempotence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOVLEDGER_KAFKA_BOOTSTRAP", raising=False)
    settings = load_settings()
    assert settings.embedded
    assert not settings.idempotent_producer
    assert settings.topic_prefix == "gov."
    assert settings.partitions == 4


def test_environment_prefix_is_read_and_external_kafka_is_idempotent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVLEDGER_KAFKA_BOOTSTRAP", EXTERNAL)
    monkeypatch.setenv("GOVLEDGER_PARTITIONS", "12")
    monkeypatch.setenv("GOVLEDGER_REPLICATION_FACTOR", "3")
    settings = load_settings()
    assert (settings.kafka_bootstrap, settings.partitions) == (EXTERNAL, 12)
    assert settings.idempotent_producer
    assert not load_settings(kafka_idempotent=False).idempotent_producer


@pytest.mark.parametrize(("overrides", "complaint"), [
    ({"kafka_security_protocol": "SSL"}, "PLAINTEXT only"),
    ({"kafka_idempotent": True}, "InitProducerId"),
    ({"replication_factor": 3}, "single node"),
    ({"partitions": 0}, "partitions"),
    ({"kafka_bootstrap": EXTERNAL, "kafka_security_protocol": "SASL_SSL"}, "needs"),
    ({"kafka_bootstrap": EXTERNAL, "kafka_sasl_mechanism": "PLAIN"}, "no SASL"),
    ({"kafka_bootstrap": EXTERNAL, "kafka_security_protocol": "SSL",
      "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "not found"),
    ({"kafka_bootstrap": " "}, "host:port"),
    ({"topic_prefix": "gov requests"}, "topic_prefix"),
    ({"log_origin": "has space"}, "log_origin"),
    ({"kafka_session_timeout_ms": 1_000}, "kafka_session_timeout_ms"),
])
def test_bad_settings_are_config_errors(overrides: dict[str, object], complaint: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOVLEDGER_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(ConfigError, match=complaint):
        load_settings(**overrides)


def test_sasl_ssl_options_pass_through_and_the_password_stays_secret(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    settings = Settings(kafka_bootstrap=EXTERNAL, kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="sequencer",
                        kafka_sasl_password="s3cret-value", kafka_ssl_cafile=cert,
                        kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    assert "s3cret-value" not in repr(settings)
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "sequencer", "s3cret-value")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert any(c["subject"] == ((("commonName", "govledger-test"),),)
               for c in context.get_ca_certs())


def test_unloadable_ssl_key_is_a_config_error(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    key.write_text("not a key")
    settings = Settings(kafka_bootstrap=EXTERNAL, kafka_security_protocol="SSL",
                        kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    with pytest.raises(ConfigError, match="SSL files"):
        build_ssl_context(settings)


def test_plaintext_has_no_ssl_context_and_no_sasl() -> None:
    options = client_options(Settings(kafka_bootstrap=None))
    assert options["ssl_context"] is None
    assert "sasl_mechanism" not in options
    assert options["request_timeout_ms"] > 5_000


def test_offsets_equal_or_ahead_are_fine() -> None:
    held = {("gov.requests", 0): 10, ("gov.requests", 1): 0}
    verify_offsets_not_rewound(held, held)
    verify_offsets_not_rewound(held, {("gov.requests", 0): 11, ("gov.requests", 1): 5})
    verify_offsets_not_rewound({}, {})


@pytest.mark.parametrize(("reported", "named"), [
    ({("gov.requests", 0): 9, ("gov.requests", 1): 0}, "gov.requests[0]"),
    ({("gov.requests", 0): 10}, "gov.requests[1]: already consumed up to 0, broker reports "
                                "missing"),
    ({("gov.requests", 0): 0, ("gov.requests", 1): 0}, "up to 10, broker reports 0"),
])
def test_offsets_behind_or_missing_are_unavailable(reported: dict[tuple[str, int], int],
                                                   named: str) -> None:
    held = {("gov.requests", 0): 10, ("gov.requests", 1): 0}
    with pytest.raises(Unavailable, match="went backwards") as info:
        verify_offsets_not_rewound(held, reported)
    assert named in str(info.value)
