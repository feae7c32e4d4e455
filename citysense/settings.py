"""Settings for every stage: environment ``CITYSENSE_*``, an optional TOML file, the stack's env.

Precedence, highest first: explicit arguments, environment variables, the embedded stack's
``<stack_dir>/env`` file (written by ``citysense stack up``), the TOML file named by
``CITYSENSE_CONFIG``, defaults. Nested sections use one underscore after the section name:
``CITYSENSE_KAFKA_BOOTSTRAP`` sets ``kafka.bootstrap``, ``CITYSENSE_MQTT_URL`` sets ``mqtt.url``.

Secrets (passwords, URLs that carry credentials) are ``SecretStr``: printed masked, revealed only
where a client is built. An invalid setting fails at start with the field's path and the reason.
"""

from __future__ import annotations

import itertools
import os
from enum import StrEnum
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
from schemas import (
    AIR_CELLS_TOPIC,
    DEADLETTER_TOPIC,
    LATE_TOPIC,
    aggregate_topic,
    measurement_topic,
)

__all__ = [
    "STAGE_HTTP_PORTS",
    "AggregateSettings",
    "DailySettings",
    "DatabaseSettings",
    "FastPath",
    "GridSettings",
    "HttpSettings",
    "IngestSettings",
    "KafkaSettings",
    "MqttSettings",
    "PrometheusSettings",
    "PublishSettings",
    "PushSettings",
    "Settings",
    "SettingsError",
    "SinkSettings",
    "StackSettings",
    "WindowSettings",
    "load_settings",
    "mask_url",
    "parse_lean",
    "stack_dir",
]

#: Project-specific default ports, so the embedded stack never collides with a system Mosquitto,
#: Kafka or PostgreSQL on the standard 1883/9092/5432.
DEFAULT_MQTT_PORT = 21883
DEFAULT_KAFKA_PORT = 29092
DEFAULT_POSTGRES_PORT = 25432
DEFAULT_PROMETHEUS_PORT = 29090
#: ``citysense run`` serves /metrics for all its stages on this port.
DEFAULT_HTTP_PORT = 28080
DEFAULT_PUBLISH_PORT = 28084
#: Each stage's default /metrics, /healthz, /readyz port, so that stages started as separate
#: processes on one host (the production layout) never collide (docs/runtime.md). The
#: publication API serves its own /metrics on ``publish.port`` (28084).
STAGE_HTTP_PORTS: dict[str, int] = {
    "run": DEFAULT_HTTP_PORT,
    "ingest": 28081,
    "aggregate": 28082,
    "sink": 28083,
}


class SettingsError(Exception):
    """Invalid configuration; the message names each bad field and why."""


class FastPath(StrEnum):
    """The named fast paths the ``lean`` setting turns on (docs/runtime.md#fast-paths).

    Each replaces a library's generic path on a stage's hot loop and is kept only while
    ``make bench`` shows its stage at least 15 % faster with it than without, in the same run.
    """

    #: Ingest reads MQTT with one large ``recv`` and decodes QoS 1 PUBLISH packets itself
    #: (``citysense._paho_private``) instead of paho's ``on_message``.
    MQTT_READ = "mqtt-read"
    #: The simulator's publisher packs user properties once and completes PUBACKs without
    #: paho's per-packet objects (``citysense._paho_private``).
    MQTT_PUBLISH = "mqtt-publish"
    #: The sink transcodes a current noise or air Avro value straight to its binary COPY tuple
    #: (``sinks.timescale._copyrow``) instead of the generic Avro decoder.
    SINK_COPY = "sink-copy"


def parse_lean(value: str) -> frozenset[FastPath]:
    """The fast paths ``CITYSENSE_LEAN`` turns on: ``0`` none, ``1`` all, or a comma list of
    :class:`FastPath` names; ``ValueError`` naming the accepted values otherwise."""
    text = value.strip().lower()
    if text in ("1", "true", "on", "all"):
        return frozenset(FastPath)
    if text in ("0", "false", "off", "none", ""):
        return frozenset()
    chosen: set[FastPath] = set()
    for name in text.split(","):
        name = name.strip()
        try:
            chosen.add(FastPath(name))
        except ValueError:
            known = ", ".join(path.value for path in FastPath)
            raise ValueError(
                f"expected 0, 1 or a comma list of fast paths ({known}), got {name!r}"
            ) from None
    return frozenset(chosen)


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
    #: What every stage's consumer asks of a fetch: the broker answers once ``fetch_min_bytes``
    #: are there or after ``fetch_max_wait_ms``. The defaults are aiokafka's own (1 byte,
    #: 500 ms): measured end to end on Tansu, 64 KiB / 100 ms fetched more often and left the
    #: broker's CPU as it was (docs/architecture.md#kafka-requests). 0 bytes: answer at once.
    fetch_min_bytes: int = Field(default=1, ge=0, le=64 << 20)
    fetch_max_wait_ms: int = Field(default=500, ge=0, le=10_000)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    #: Partitions of each topic a stage creates (an existing topic keeps its own); the embedded
    #: stack's env sets 1 (docs/architecture.md#kafka-requests).
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
    """Where a stage serves /metrics, /healthz and /readyz.

    ``port`` None (the default) gives each stage its own port (:data:`STAGE_HTTP_PORTS`); a
    number is used by whichever stage runs (0: any free port).
    """

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)

    def port_for(self, stage: str) -> int:
        """The port ``stage`` listens on: the configured one, else the stage's default."""
        if self.port is not None:
            return self.port
        return STAGE_HTTP_PORTS[stage]


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
    #: 25 ms, not 5: a broker's cost follows the record batches it stores and serves, and end to
    #: end at 3,000 msg/s 25 ms made batches 2.5x larger and cut the broker's CPU per message by
    #: about 60 % for at most 25 ms more latency (docs/architecture.md#kafka-requests).
    batch_max_records: int = Field(default=2000, ge=1)
    linger_ms: float = Field(default=25.0, ge=0, le=10_000)
    #: Recent LoRaWAN uplinks remembered to recognise duplicates (several gateways, redelivery).
    duplicate_window: int = Field(default=100_000, ge=0)
    retry_backoff_max_s: float = Field(default=5.0, gt=0, le=300)
    #: Seconds between two refreshes of the fleet-health gauges (silent and low-battery sensors,
    #: RSSI/SNR histograms: ``ingest._fleet``); 0 turns fleet health off.
    fleet_refresh_s: float = Field(default=5.0, ge=0, le=3600)
    #: Read Mosquitto's queue depth from its ``$SYS`` topics (``ingest._broker``), on the first
    #: broker; off where the ACL does not let ingest read ``$SYS/broker/store/#``.
    broker_stats: bool = True
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


#: Every measurement topic, then every aggregate topic, then the grid stage's cells
#: (docs/architecture.md#kafka-contract).
DEFAULT_SINK_TOPICS: tuple[str, ...] = (
    tuple(measurement_topic(kind) for kind in KINDS)
    + tuple(aggregate_topic(kind) for kind in KINDS)
    + (AIR_CELLS_TOPIC,)
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
    #: Shortest time between two polls that make the consumer fetch again (ms): a poll that
    #: emptied what was fetched is followed by the next one only after this; 0: at once.
    poll_interval_ms: int = Field(default=0, ge=0, le=5_000)
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
    #: Passwords given to the writer, read-only and open-data API roles by ``citysense db
    #: migrate`` (the roles are created without login when unset). Sent to the server already
    #: SCRAM-hashed.
    writer_password: SecretStr | None = None
    reader_password: SecretStr | None = None
    api_password: SecretStr | None = None

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


class WindowSettings(_Section):
    """One tumbling event-time window definition of the aggregator.

    Contract: docs/architecture.md#windows-and-indicators.

    Windows are aligned to the Unix epoch in UTC and half-open, ``[start, start + size_s)``. A
    window is emitted when the watermark passes its end + ``grace_s``; records that arrive after
    that but less than ``allowed_lateness_s`` later re-emit it with the next revision; older
    ones go to the late topic. ``emit = "update"`` also emits the open window (``final`` false)
    after every poll that changed it.
    """

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    size_s: int = Field(gt=0, le=86_400)
    grace_s: float = Field(default=5.0, ge=0, le=86_400)
    allowed_lateness_s: float = Field(default=300.0, ge=0, le=7 * 86_400)
    emit: Literal["final", "update"] = "final"
    #: Per sensor, and rolled up per site from the sensors' results by the rollup stage.
    scopes: tuple[Literal["sensor", "site"], ...] = ("sensor", "site")

    @model_validator(mode="after")
    def _divides_a_day(self) -> WindowSettings:
        if 86_400 % self.size_s:
            raise ValueError(f"size_s {self.size_s} must divide a day (86400 s)")
        if "sensor" not in self.scopes:
            raise ValueError("scopes must include 'sensor' (site windows roll sensors up)")
        return self


def _default_windows() -> tuple[WindowSettings, ...]:
    return (
        WindowSettings(name="1m", size_s=60, grace_s=5.0, allowed_lateness_s=300.0),
        WindowSettings(name="15m", size_s=900, grace_s=10.0, allowed_lateness_s=900.0),
        WindowSettings(name="1h", size_s=3600, grace_s=30.0, allowed_lateness_s=900.0),
    )


class DailySettings(_Section):
    """Daily windows (Europe/Paris calendar days), computed by the rollup stage from the hourly
    aggregates, never from raw records."""

    enabled: bool = True
    #: The hourly window the daily indicators are built from (its ``size_s`` must be 3600).
    hourly_window: str = "1h"
    timezone: str = "Europe/Paris"
    #: A day is emitted when every partition's results reach its end + grace.
    grace_s: float = Field(default=300.0, ge=0, le=86_400)
    allowed_lateness_s: float = Field(default=86_400.0, ge=0, le=7 * 86_400)


def _default_grid_windows() -> tuple[WindowSettings, ...]:
    return (
        WindowSettings(name="15m", size_s=900, grace_s=10.0, allowed_lateness_s=900.0),
        WindowSettings(name="1h", size_s=3600, grace_s=30.0, allowed_lateness_s=900.0),
    )


class GridSettings(_Section):
    """The grid stage: mobile air sensors' PM2.5 per cell of the European statistical grid.

    Contract: docs/streams.md#the-grid-stage. A cell's window is published only when at least
    ``min_samples`` samples from at least ``min_vehicles`` distinct mobile sensors fell in it,
    so that one car's trace cannot be followed cell by cell.
    """

    enabled: bool = True
    group_id: str = "citysense-aggregate-grid"
    topic: str = AIR_CELLS_TOPIC
    #: Cell size in metres (the INSPIRE grid's resolutions; GEOSTAT publishes 100 m and 1 km).
    resolution_m: Literal[100, 1000] = 100
    #: Windows per cell; only ``size_s``, ``grace_s`` and ``allowed_lateness_s`` apply (cells
    #: are emitted once closed, ``emit`` and ``scopes`` are ignored).
    windows: tuple[WindowSettings, ...] = Field(default_factory=_default_grid_windows)
    min_samples: int = Field(default=5, ge=1, le=1_000_000)
    min_vehicles: int = Field(default=2, ge=1, le=10_000)
    #: A fix less accurate than this (its stated radius, metres) is left out of the map.
    max_accuracy_m: float = Field(default=50.0, gt=0)

    @field_validator("windows")
    @classmethod
    def _distinct_grid_windows(
        cls, value: tuple[WindowSettings, ...]
    ) -> tuple[WindowSettings, ...]:
        if not value:
            raise ValueError("at least one window")
        if any(w.size_s < 60 for w in value):
            raise ValueError("grid windows last a minute or more")
        sizes = [w.size_s for w in value]
        if len(set(sizes)) != len(sizes) or len({w.name for w in value}) != len(value):
            raise ValueError("window names and sizes must be distinct")
        return value


class AggregateSettings(_Section):
    """The aggregator: measurement topics → windowed indicators.

    Contract: docs/architecture.md#windows-and-indicators.
    """

    group_id: str = "citysense-aggregate"
    #: The rollup stage (per-site windows, daily windows) reads the per-sensor aggregates
    #: topics in its own group, where one member at a time holds every partition.
    rollup_group_id: str = "citysense-aggregate-rollup"
    #: A site window is emitted when every partition's sensor results reach its end + grace;
    #: a sensor result arriving later revises it.
    site_grace_s: float = Field(default=0.0, ge=0, le=86_400)
    #: From the environment as a comma-separated list.
    kinds: Annotated[tuple[Literal["noise", "air", "traffic", "occupancy"], ...], NoDecode] = (
        "noise",
        "air",
        "traffic",
        "occupancy",
    )
    windows: tuple[WindowSettings, ...] = Field(default_factory=_default_windows)
    daily: DailySettings = DailySettings()
    grid: GridSettings = GridSettings()
    #: Watermark = largest event time seen - this bound, per partition.
    out_of_orderness_s: float = Field(default=10.0, ge=0, le=86_400)
    #: A partition silent for this long stops holding the watermark back.
    idle_timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    late_topic: str = LATE_TOPIC
    dead_letter_topic: str = DEADLETTER_TOPIC
    max_poll_records: int = Field(default=20_000, ge=1, le=1_000_000)
    #: Shortest time between two polls of each of the aggregator's consumers (ms); 0: poll
    #: again at once. A poll soon after the last one hands out the few partitions the broker
    #: answered for meanwhile, and every poll and fetch costs the same whatever it holds.
    poll_interval_ms: int = Field(default=0, ge=0, le=5_000)
    #: How often the lowest offset still needed by a kept window is committed.
    commit_interval_s: float = Field(default=5.0, gt=0, le=600)
    #: Occupancy: ``affluence`` level thresholds on the percent of capacity (1 + thresholds met).
    affluence_thresholds_pct: tuple[float, ...] = (25.0, 50.0, 75.0, 90.0)
    #: Traffic counters: an increase above max(this rate x elapsed time, 1000) is a reset.
    max_crossings_per_s: float = Field(default=50.0, gt=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=100_000)

    @field_validator("kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(kind.strip() for kind in value.split(",") if kind.strip())
        return value

    @field_validator("kinds")
    @classmethod
    def _some_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one kind")
        if len(set(value)) != len(value):
            raise ValueError("a kind is listed twice")
        return value

    @field_validator("windows")
    @classmethod
    def _distinct_windows(cls, value: tuple[WindowSettings, ...]) -> tuple[WindowSettings, ...]:
        if not value:
            raise ValueError("at least one window")
        names = [w.name for w in value]
        sizes = [w.size_s for w in value]
        if len(set(names)) != len(names) or len(set(sizes)) != len(sizes):
            raise ValueError("window names and sizes must be distinct")
        return value

    @field_validator("affluence_thresholds_pct")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("thresholds must be strictly increasing")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AggregateSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        if self.daily.enabled:
            hourly = [w for w in self.windows if w.name == self.daily.hourly_window]
            if not hourly or hourly[0].size_s != 3600:
                raise ValueError(
                    f"daily.hourly_window {self.daily.hourly_window!r} must name a window of "
                    "size_s 3600 (or set daily.enabled = false)"
                )
        return self

    def window(self, name: str) -> WindowSettings:
        return next(w for w in self.windows if w.name == name)


class PushSettings(_Section):
    """Optional push of new rows to an external portal's realtime push API (OpenDataSoft style:
    ``POST <base_url>/api/push/1.0/<dataset>/<resource>/push/?pushkey=…``)."""

    enabled: bool = False
    base_url: str | None = None
    pushkey: SecretStr | None = None
    #: Published dataset id -> the portal's ``<dataset>/<resource>`` path to push its rows to.
    targets: dict[str, str] = Field(default_factory=dict)
    #: A request carries at most this many rows and at most 5 MB (the portal's limit).
    batch_max_rows: int = Field(default=1000, ge=1, le=100_000)
    batch_max_wait_s: float = Field(default=2.0, gt=0, le=600)
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=60.0, gt=0, le=3600)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: Where the push keeps each target's position across restarts (a small JSON file, written
    #: atomically): the publish process holds only the read-only database role.
    state_file: Path = Path("push-state.json")

    @model_validator(mode="after")
    def _complete(self) -> PushSettings:
        if self.enabled and (not self.base_url or self.pushkey is None or not self.targets):
            raise ValueError("enabled push needs base_url, pushkey and at least one target")
        return self


class PublishSettings(_Section):
    """The open-data publication API (``citysense publish``): datasets, exports, live feed."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PUBLISH_PORT, ge=0, le=65535)
    #: The read-only role's connection URL; None means ``database.url``.
    database_url: SecretStr | None = None
    pool_max: int = Field(default=8, ge=1, le=256)
    #: Any statement the API runs is cancelled after this long (HTTP 503 for the client).
    statement_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    #: Public base URL of the API, used in the catalogue's links; None means http://host:port.
    public_url: str | None = None
    #: Requests per client (by address) and window, in the ``limits`` notation: "20/second".
    rate_limit: str = "50/second"
    #: Default licence of every dataset (``etalab-2.0`` or ``odbl-1.0``).
    licence: Literal["etalab-2.0", "odbl-1.0"] = "etalab-2.0"
    publisher: str = "citysense"
    contact_email: str = "opendata@example.org"
    #: A TOML file of ``[[datasets]]`` replacing the built-in list (same fields as the built-in).
    datasets_file: Path | None = None
    #: How often the live feed looks for new rows when no change notification arrived.
    live_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    push: PushSettings = PushSettings()


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
    aggregate: AggregateSettings = AggregateSettings()
    publish: PublishSettings = PublishSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``auto``: short human lines when stderr is a terminal, JSON lines otherwise.
    log_format: Literal["auto", "json", "console"] = "auto"
    registry: Path | None = None
    shutdown_deadline_s: float = Field(default=20.0, gt=0, le=600)
    #: The fast paths (``CITYSENSE_LEAN``): ``1`` all (the default), ``0`` none, so every stage
    #: takes its libraries' public, generic paths, or a comma list of :class:`FastPath` names.
    lean: str = "1"

    @field_validator("lean", mode="before")
    @classmethod
    def _lean(cls, value: object) -> object:
        if isinstance(value, bool | int):
            value = str(int(value))
        if isinstance(value, str):
            parse_lean(value)  # ValueError names the accepted values
        return value

    def fast(self, path: FastPath) -> bool:
        """Whether the fast path ``path`` is on (the ``lean`` setting)."""
        return path in parse_lean(self.lean)

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

    def metrics_ports(self) -> dict[str, int]:
        """Every stage's /metrics port (the publication API's included), for scrapers."""
        ports = {stage: self.http.port_for(stage) for stage in STAGE_HTTP_PORTS}
        ports["publish"] = self.publish.port
        return ports

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, for printing and logs."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["mqtt"]["url"] = mask_url(self.mqtt.url.get_secret_value())
        data["database"]["url"] = mask_url(self.database.url.get_secret_value())
        if self.publish.database_url is not None:
            data["publish"]["database_url"] = mask_url(self.publish.database_url.get_secret_value())
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
