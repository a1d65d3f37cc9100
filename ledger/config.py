"""One ``Settings`` object, validated at start, passed down explicitly (STYLE.md section 7).

Every field can be set from the environment with the ``GOVLEDGER_`` prefix (for example
``GOVLEDGER_KAFKA_BOOTSTRAP=kafka-1:9092``); docs/broker.md lists them all. Call
:func:`load_settings` once at start-up: it turns pydantic's validation error into a
:class:`~ledger.errors.ConfigError` so ``main()`` reports it like any other operator error.

Secrets policy: signing keys never come from an environment value or a default; fields that
need key material hold *paths* to files. The only secret accepted as a value is the Kafka SASL
password (a :class:`~pydantic.SecretStr`, never printed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.errors import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Every knob of a govledger process. Frozen: build a new one instead of mutating.

    ``kafka_bootstrap=None`` means "start the embedded broker" (DESIGN.md section 8); any other
    value points at an external Apache Kafka cluster.
    """

    model_config = SettingsConfigDict(env_prefix="GOVLEDGER_", frozen=True, extra="forbid",
                                      case_sensitive=False)

    # Storage.
    data_dir: Path = Path("./govledger-data")
    # Signing keys, one per role (docs/production.md "Keys per role"): the processor loads
    # only the authority key, the sequencer only the ledger key, the API neither. Unset:
    # DATA/keys/authority.key and DATA/keys/ledger.key.
    authority_key_file: Path | None = None
    ledger_key_file: Path | None = None
    # The operator's admin key (signs the governance genesis; a person's key, not a
    # service's): only `init --genesis` or the first `up` reads it. Unset:
    # DATA/keys/operator.key; set it to keep the key off the data volume every role mounts.
    operator_key_file: Path | None = None

    # Kafka: where and how.
    kafka_bootstrap: str | None = None
    topic_prefix: str = Field(default="gov.", pattern=r"^[A-Za-z0-9._-]{0,200}$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    kafka_idempotent: bool | None = None
    kafka_client_id: str = "govledger"
    kafka_request_timeout_ms: int = Field(default=30_000, ge=6_000)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    kafka_linger_ms: int = Field(default=0, ge=0, le=1_000)
    kafka_fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=30_000)
    # The longest fetch wait of an idle consumer (ledger/kafka/idle.py): on the embedded
    # broker, what the first request after idle may wait per consume hop; never below
    # fetch_max_wait_ms (so on Kafka, at 500 ms, nothing changes).
    kafka_idle_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    broker_start_timeout_s: float = Field(default=20.0, gt=0, le=300)

    # Processes.
    processor_group: bool | None = None
    processor_own_process: bool = True
    # `govledger up` runs the sequencer in a child process too (issue 14); False keeps it on
    # the service's event loop (tests that patch it in process).
    sequencer_own_process: bool = True

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=0, ge=0, le=65_535)
    # Each request that waits for human approval is POSTed here (ledger/server/webhook.py).
    approval_webhook: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")

    # Operations (docs/production.md). A role without the API serves /metrics on
    # metrics_port (at api_host) when set; heartbeat_file is what `govledger health` checks.
    metrics_port: int | None = Field(default=None, ge=1, le=65_535)
    heartbeat_file: Path | None = None
    # Logs: "text" lines or one JSON object per line (ledger/telemetry.py). Tracing is
    # configured by the standard OTEL_* variables, not here.
    log_format: Literal["text", "json"] = "text"

    # Decision limits (placeholders the processors use; DESIGN.md section 3).
    max_clock_skew_s: int = Field(default=30, ge=0, le=3_600)
    max_ttl_s: int = Field(default=86_400, ge=1)
    max_lineage_depth: int = Field(default=8, ge=1, le=64)
    rate_limit_per_s: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    # Ledger (DESIGN.md section 7).
    checkpoint_interval_s: float = Field(default=0.5, gt=0, le=3_600)
    log_origin: str = Field(default="govledger.localhost/log", min_length=1, max_length=255,
                            pattern=r"^[^\s]+$")
    # Witnesses that cosign each checkpoint (C2SP tlog-witness; ledger/log/cosigning.py):
    # each "<http(s) URL> <witness vkey>"; from the environment a JSON list.
    witnesses: tuple[str, ...] = Field(default=(), max_length=64)

    @model_validator(mode="after")
    def _check_key_files(self) -> Settings:
        # init writes NAME.key and NAME.pub beside it (ledger.keyfiles.generate_keypair).
        for path in (self.authority_key_file, self.ledger_key_file, self.operator_key_file):
            if path is not None and path.suffix != ".key":
                raise ValueError(f"key file {path}: the name must end in .key")
        return self

    # The governance monitor (processors/monitor, docs/monitor.md).
    monitor: bool = True
    monitor_metrics_port: int = Field(default=0, ge=0, le=65_535)
    monitor_report_grace_s: float = Field(default=5.0, gt=0, le=3_600)
    monitor_silent_after_s: float = Field(default=300.0, gt=0, le=86_400)
    monitor_burst_window_s: float = Field(default=60.0, gt=0, le=86_400)
    monitor_burst_threshold: int = Field(default=5, ge=1, le=64)
    monitor_storm_limit: int = Field(default=10, ge=1)
    monitor_tick_s: float = Field(default=1.0, gt=0, le=60)
    monitor_nice: int = Field(default=10, ge=0, le=19)
    # Linux SCHED_IDLE for the monitor: it runs only on CPU nobody else wants, so it never
    # takes a cycle from a decision; under saturation it lags (govledger_monitor_lag).
    monitor_sched_idle: bool = True
    monitor_ledger_wait_s: float = Field(default=60.0, gt=0, le=3_600)

    @model_validator(mode="after")
    def _check_kafka(self) -> Settings:
        if self.embedded:
            # The embedded Tansu build speaks plaintext only and fails InitProducerId.
            if self.kafka_security_protocol != "PLAINTEXT":
                raise ValueError("the embedded broker supports PLAINTEXT only; set "
                                 "GOVLEDGER_KAFKA_BOOTSTRAP to use SSL or SASL")
            if self.kafka_idempotent:
                raise ValueError("the embedded broker has no idempotent producer "
                                 "(InitProducerId fails); leave kafka_idempotent unset")
            if self.replication_factor != 1:
                raise ValueError("the embedded broker is a single node: replication_factor 1")
        elif not self.kafka_bootstrap or not self.kafka_bootstrap.strip():
            raise ValueError("kafka_bootstrap must be host:port[,host:port...] or unset")
        if self.kafka_security_protocol.startswith("SASL_"):
            if (self.kafka_sasl_mechanism is None or not self.kafka_sasl_username
                    or self.kafka_sasl_password is None):
                raise ValueError(f"{self.kafka_security_protocol} needs kafka_sasl_mechanism, "
                                 "kafka_sasl_username and kafka_sasl_password")
        elif self.kafka_sasl_mechanism is not None or self.kafka_sasl_username is not None:
            raise ValueError("SASL settings given but kafka_security_protocol has no SASL")
        uses_ssl = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        ssl_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not uses_ssl and any(f is not None for f in ssl_files):
            raise ValueError("SSL files given but kafka_security_protocol has no SSL")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        for path in ssl_files:
            if path is not None and not path.is_file():
                raise ValueError(f"SSL file not found: {path}")
        return self

    @property
    def embedded(self) -> bool:
        """True when govledger must start its own broker (no bootstrap configured)."""
        return self.kafka_bootstrap is None

    @property
    def use_processor_group(self) -> bool:
        """``processor_group`` resolved: auto = a consumer group for external Kafka (workers
        scale out), one worker owning every partition on the embedded broker."""
        if self.processor_group is not None:
            return self.processor_group
        return not self.embedded

    @property
    def idempotent_producer(self) -> bool:
        """``kafka_idempotent`` resolved: auto = off for the embedded broker, on for Kafka."""
        if self.kafka_idempotent is not None:
            return self.kafka_idempotent
        return not self.embedded


    @property
    def fetch_max_wait_ms(self) -> int:
        """``kafka_fetch_max_wait_ms`` resolved: auto = 10 ms embedded, 500 ms for Kafka.

        The embedded broker does not answer a waiting fetch when data arrives; it holds it
        for the full ``fetch_max_wait_ms``, so that wait *is* the consume latency there
        (measured: 500 ms wait -> p50 126 ms, 5 ms -> p50 3.6 ms at 500 msg/s).
        """
        if self.kafka_fetch_max_wait_ms is not None:
            return self.kafka_fetch_max_wait_ms
        return 10 if self.embedded else 500


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (``GOVLEDGER_*``) plus ``overrides``; validate everything once.

    Raises ConfigError naming every field that is wrong (values of secrets are not echoed).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
