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
from aiokafka.errors import TopicAlreadyExistsError
from paho.mqtt.enums import CallbackAPIVersion

from citysense.settings import DatabaseSettings, KafkaSettings, MqttSettings

__all__ = [
    "connect_database",
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
    options: dict[str, Any] = {
        **settings.client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(settings: KafkaSettings, topics: Iterable[str]) -> None:
    """Create the topics that do not exist yet with the configured partitions."""
    admin = AIOKafkaAdminClient(**settings.client_options())
    await admin.start()
    try:
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
