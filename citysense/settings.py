"""Settings for every stage: environment ``CITYSENSE_*``, an optional TOML file, the stack's env.

Precedence, highest first: explicit arguments, environment variables, the embedded stack's
``<stack_dir>/env`` file (written by ``citysense stack up``), the TOML file named by
``CITYSENSE_CONFIG``, defaults. Nested sections use one underscore after the section name:
``CITYSENSE_KAFKA_BOOTSTRAP`` sets ``kafka.bootstrap``, ``CITYSENSE_MQTT_URL`` sets ``mqtt.url``.

Secrets (passwords, URLs that carry credentials) are ``SecretStr``: printed masked, revealed only
where a client is built. An invalid setting fails at start with the field's path and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from decoders import KINDS
from schemas import DEADLETTER_TOPIC, aggregate_topic, measurement_topic

__all__ = [
    "DatabaseSettings",
    "HttpSettings",
    "IngestSettings",
    "KafkaSettings",
    "MqttSettings",
    "PrometheusSettings",
    "Settings",
    "SettingsError",
    "SinkSettings",
    "StackSettings",
    "load_settings",
    "mask_url",
    "stack_dir",
]

#: Project-specific default ports, so the embedded stack never collides with a system Mosquitto,
#: Kafka or PostgreSQL on the standard 1883/9092/5432.
DEFAULT_MQTT_PORT = 21883
DEFAULT_KAFKA_PORT = 29092
DEFAULT_POSTGRES_PORT = 25432
DEFAULT_PROMETHEUS_PORT = 29090
DEFAULT_HTTP_PORT = 28080


class SettingsError(Exception):
    """Invalid configuration; the message names each bad field and why."""


def stack_dir() -> Path:
    """Where the embedded stack keeps its state: ``CITYSENSE_STACK_DIR`` or ``./.stack``."""
    return Path(os.environ.get("CITYSENSE_STACK_DIR", ".stack")).resolve()


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_url(value: SecretStr, schemes: tuple[str, ...]) -> SecretStr:
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(schemes)}, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("URL has no host")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from exc
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """MQTT broker connection. Credentials may be in the URL or in username/password."""

    url: SecretStr = SecretStr(f"mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}")
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = "citysense-ingest"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    session_expiry_s: int = Field(default=3600, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_url(value, ("mqtt", "mqtts", "tcp", "ssl"))

    def endpoint(self) -> tuple[str, int, str | None, str | None, bool]:
        """(host, port, username, password, tls) from the URL and the explicit fields."""
        parts = urlsplit(self.url.get_secret_value())
        tls = parts.scheme in ("mqtts", "ssl") or self.tls_ca_file is not None
        port = parts.port or (8883 if tls else 1883)
        username = self.username or parts.username
        password = self.password.get_secret_value() if self.password else parts.password
        return parts.hostname or "127.0.0.1", port, username, password, tls


class KafkaSettings(_Section):
    """Kafka (or any Kafka-protocol broker) client settings, passed through to aiokafka."""

    bootstrap: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    #: On for real Kafka; the embedded Tansu broker does not support the idempotent producer,
    #: so ``citysense stack env`` sets it off.
    idempotence: bool = True
    acks: Literal["all", "1", "0"] = "all"
    linger_ms: int = Field(default=5, ge=0, le=60_000)
    max_batch_size: int = Field(default=262_144, ge=1024)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=7)

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return value

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            options["ssl_context"] = ssl.create_default_context(
                cafile=str(self.ssl_ca_file) if self.ssl_ca_file else None
            )
        return options


class DatabaseSettings(_Section):
    """PostgreSQL + TimescaleDB. The URL carries the password, hence secret."""

    url: SecretStr = SecretStr(
        f"postgresql://citysense@127.0.0.1:{DEFAULT_POSTGRES_PORT}/citysense"
    )
    pool_min: int = Field(default=1, ge=1)
    pool_max: int = Field(default=4, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_url(value, ("postgresql", "postgres"))


class PrometheusSettings(_Section):
    url: str = f"http://127.0.0.1:{DEFAULT_PROMETHEUS_PORT}"


class HttpSettings(_Section):
    """Where a stage serves /metrics, /healthz and /readyz."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_HTTP_PORT, ge=0, le=65535)


class StackSettings(_Section):
    """Ports of the embedded stack started by ``citysense stack up``.

    ``dir`` comes from ``CITYSENSE_STACK_DIR`` (see :func:`stack_dir`, read before the other
    settings because the stack's env file lives there).
    """

    dir: Path = Path(".stack")
    mqtt_port: int = Field(default=DEFAULT_MQTT_PORT, ge=1, le=65535)
    kafka_port: int = Field(default=DEFAULT_KAFKA_PORT, ge=1, le=65535)
    postgres_port: int = Field(default=DEFAULT_POSTGRES_PORT, ge=1, le=65535)
    prometheus_port: int = Field(default=DEFAULT_PROMETHEUS_PORT, ge=1, le=65535)
    #: Mosquitto's per-client queue while the consumer is away: at 20,000 msg/s a 2,000,000
    #: message queue holds 100 s of a whole city; at the reference square's rate, days.
    mqtt_max_queued_messages: int = Field(default=2_000_000, ge=1000)


class IngestSettings(_Section):
    """Where uplinks come from and how ingest bounds, batches and polices them."""

    #: Raw binary payloads, codec from the registry: ``sensors/<sensor_id>/up``.
    direct_topic: str | None = "sensors/+/up"
    #: The same, published by an authenticated gateway: ``gateways/<gateway>/sensors/<id>/up``.
    #: With the broker's ``pattern write gateways/%u/#`` ACL the gateway segment is the MQTT
    #: username, so ingest can check the sensor is bound to that gateway.
    gateway_topic: str | None = "gateways/+/sensors/+/up"
    chirpstack_topic: str | None = "application/+/device/+/event/up"
    tts_topic: str | None = "v3/+/devices/+/up"
    #: MQTT shared-subscription group: several ingest processes split the messages.
    shared_group: str | None = None
    #: MQTT v5 Receive Maximum: messages delivered but not yet acknowledged (PUBACK after Kafka
    #: acknowledged). A Kafka outage makes the broker hold the rest, not our memory.
    max_inflight: int = Field(default=4000, ge=1, le=65535)
    max_payload_bytes: int = Field(default=16384, ge=16, le=1_000_000)
    #: Devices absent from the registry: dead-letter them, or accept as ``<codec>:<dev_eui>``
    #: when the network server's device profile names a codec.
    unknown_devices: Literal["dead-letter", "accept"] = "dead-letter"
    #: Records per Kafka batch before it is sent, and the longest a record waits for company.
    batch_max_records: int = Field(default=2000, ge=1)
    linger_ms: float = Field(default=5.0, ge=0, le=10_000)
    #: Recent LoRaWAN uplinks remembered to recognise duplicates (several gateways, redelivery).
    duplicate_window: int = Field(default=100_000, ge=0)
    retry_backoff_max_s: float = Field(default=5.0, gt=0, le=300)
    #: More brokers to subscribe to, each with its own connection settings.
    extra_brokers: tuple[MqttSettings, ...] = ()
    #: Tolerated clock skew of device timestamps ahead of our receive time.
    max_future_s: float = Field(default=300.0, ge=0)

    def subscriptions(self) -> list[str]:
        topics = [
            t
            for t in (self.direct_topic, self.gateway_topic, self.chirpstack_topic, self.tts_topic)
            if t
        ]
        if self.shared_group:
            return [f"$share/{self.shared_group}/{t}" for t in topics]
        return topics


#: Every measurement topic, then every aggregate topic (DESIGN.md section 4).
DEFAULT_SINK_TOPICS: tuple[str, ...] = tuple(measurement_topic(kind) for kind in KINDS) + tuple(
    aggregate_topic(kind) for kind in KINDS
)


class SinkSettings(_Section):
    """Kafka → TimescaleDB sink.

    Batches close at ``batch_max_records`` Kafka records or ``batch_max_wait_s`` after their first
    record, whichever comes first. Retention and compression apply to the raw measurement tables
    and, separately, to the aggregate tables; ``None`` keeps data forever / never compresses.
    Compression and the extension's own policy jobs need the ``timescale`` licence; under the
    Apache-only build the sink drops old chunks itself every ``maintenance_interval_s``.
    """

    group_id: str = "citysense-sink-timescale"
    #: From the environment as a comma-separated list (``NoDecode``: not JSON).
    topics: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SINK_TOPICS
    dead_letter_topic: str = DEADLETTER_TOPIC
    batch_max_records: int = Field(default=10_000, ge=1, le=1_000_000)
    batch_max_wait_s: float = Field(default=0.5, gt=0, le=60)
    #: Capped exponential backoff with full jitter while the database is down or read-only.
    retry_initial_s: float = Field(default=0.2, gt=0, le=60)
    retry_max_s: float = Field(default=10.0, gt=0, le=600)
    #: Apply pending migrations when the sink starts (needs the schema owner's rights).
    migrate_on_start: bool = True
    raw_retention_days: int | None = Field(default=90, ge=1)
    aggregate_retention_days: int | None = Field(default=None, ge=1)
    compress_after_days: int | None = Field(default=7, ge=1)
    #: How often the Apache-licence retention job (``drop_chunks``) runs.
    maintenance_interval_s: float = Field(default=3600.0, ge=1)
    #: Consumer group liveness; lower values make a replacement member take over faster.
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=100_000)
    #: Kafka's own group commit (informative only: the database holds the real offsets).
    kafka_commit_interval_s: float = Field(default=5.0, ge=0)
    #: Passwords given to the writer and read-only roles by ``citysense db migrate`` (the roles
    #: are created without login when unset). Sent to the server already SCRAM-hashed.
    writer_password: SecretStr | None = None
    reader_password: SecretStr | None = None

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        # From the environment: CITYSENSE_SINK_TOPICS=city.noise.measurements.v1,city....
        if isinstance(value, str):
            return tuple(topic.strip() for topic in value.split(",") if topic.strip())
        return value

    @field_validator("topics")
    @classmethod
    def _some_topics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one topic")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> SinkSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self


class Settings(BaseSettings):
    """All settings; each stage reads the sections it needs."""

    model_config = SettingsConfigDict(
        env_prefix="CITYSENSE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        frozen=True,
    )

    mqtt: MqttSettings = MqttSettings()
    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    http: HttpSettings = HttpSettings()
    stack: StackSettings = StackSettings()
    ingest: IngestSettings = IngestSettings()
    sink: SinkSettings = SinkSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    registry: Path | None = None
    shutdown_deadline_s: float = Field(default=20.0, gt=0, le=600)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get("CITYSENSE_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, for printing and logs."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["mqtt"]["url"] = mask_url(self.mqtt.url.get_secret_value())
        data["database"]["url"] = mask_url(self.database.url.get_secret_value())
        return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from all sources; ``SettingsError`` naming each bad field and why.

    The stack's env file is read only when it exists, so production deployments that never ran
    ``citysense stack up`` see only their environment and TOML file.
    """
    config_file = os.environ.get("CITYSENSE_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"CITYSENSE_CONFIG: no such file {config_file!r}")
    env_file = stack_dir() / "env"
    try:
        return Settings(_env_file=env_file if env_file.is_file() else None, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
