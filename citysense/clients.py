"""Client factories for MQTT, Kafka and PostgreSQL built from settings.

Stages take these factories (or the clients they build) as arguments, so unit tests inject fakes
and integration tests use the real services; secrets are revealed only here.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from paho.mqtt.enums import CallbackAPIVersion

from citysense.errors import StartupError
from citysense.settings import DatabaseSettings, KafkaSettings, MqttSettings, mask_url

__all__ = [
    "check_database",
    "connect_database",
    "consumer_options",
    "ensure_topics",
    "kafka_consumer",
    "kafka_producer",
    "mqtt_client",
]


def mqtt_client(
    settings: MqttSettings,
    client_id: str | None = None,
    *,
    clean_start: bool = True,
    manual_ack: bool = False,
) -> tuple[mqtt.Client, str, int]:
    """A paho 2.x MQTT v5 client with credentials and TLS applied; returns (client, host, port).

    The caller connects (``client.connect(host, port, ...)``) so it can choose clean start and
    session expiry, which decide whether the broker keeps QoS 1 messages while it is away.
    """
    host, port, username, password, tls = settings.endpoint()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id if client_id is not None else settings.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(
            ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file else None,
            certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client, host, port


def kafka_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer with the configured acks, batching, compression and idempotence."""
    options: dict[str, Any] = {
        **settings.client_options(),
        "acks": "all" if settings.acks == "all" else int(settings.acks),
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "enable_idempotence": settings.idempotence,
        "compression_type": None if settings.compression == "none" else settings.compression,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def kafka_consumer(
    settings: KafkaSettings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer in ``group_id`` that commits only when the stage says so."""
    return AIOKafkaConsumer(*topics, **consumer_options(settings, group_id=group_id, **overrides))


def consumer_options(
    settings: KafkaSettings, *, group_id: str | None, **overrides: Any
) -> dict[str, Any]:
    """:func:`kafka_consumer`'s keyword arguments: manual commits, and fetches that wait for
    ``fetch_min_bytes`` or ``fetch_max_wait_ms`` (:class:`KafkaSettings`); ``overrides`` win."""
    options: dict[str, Any] = {
        **settings.client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_min_bytes": settings.fetch_min_bytes,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }
    options.update(overrides)
    return options


async def ensure_topics(settings: KafkaSettings, topics: Iterable[str]) -> None:
    """Create the topics that do not exist yet with the configured partitions.

    Every stage calls it first at start, so a Kafka it cannot use (unreachable, refusing the
    credentials) is reported here as a :class:`StartupError` naming the setting.
    """
    admin = AIOKafkaAdminClient(**settings.client_options())
    try:
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            raise StartupError(
                f"Kafka at {settings.bootstrap} is unreachable; "
                "check CITYSENSE_KAFKA_BOOTSTRAP or kafka.bootstrap"
            ) from exc
        except KafkaError as exc:
            raise StartupError(
                f"Kafka at {settings.bootstrap} cannot be used ({_first_line(exc)}); check "
                "kafka.bootstrap, kafka.security_protocol and kafka.sasl_* (CITYSENSE_KAFKA_*)"
            ) from exc
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
            )
            for name in topics
            if name not in existing
        ]
        # Another stage may create a topic between our list and our create.
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def connect_database(
    settings: DatabaseSettings, *, autocommit: bool = False
) -> psycopg.AsyncConnection[Any]:
    """An async connection to the configured database."""
    return await psycopg.AsyncConnection.connect(
        settings.url.get_secret_value(), autocommit=autocommit
    )


#: What libpq says (its messages are not localised for these: the server's are, but the
#: stack's and managed servers' default to English) and what to tell the user.
_CONNECT_PROBLEMS = (
    ("password authentication failed", "wrong password or user"),
    ("no password supplied", "no password given"),
    ("does not exist", "the database does not exist"),
    ("no pg_hba.conf entry", "the server does not accept this user from this host"),
)


async def check_database(
    settings: DatabaseSettings,
    *,
    setting: str = "CITYSENSE_DATABASE_URL or database.url",
    timeout_s: float = 5.0,
) -> None:
    """Connect once, as a stage does at start; a :class:`StartupError` naming ``setting`` when
    the database cannot be used (unreachable, wrong password, database missing)."""
    url = settings.url.get_secret_value()
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, round(timeout_s)))
    except psycopg.OperationalError as exc:
        message = str(exc)
        problem = next((say for hint, say in _CONNECT_PROBLEMS if hint in message), None)
        where = mask_url(url)
        if problem is None:
            problem = f"cannot reach it ({_first_line(exc)})"
        raise StartupError(f"database {where}: {problem}; check {setting}") from exc
    await conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
