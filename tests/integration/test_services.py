"""Each real service works through the project's own clients: MQTT, Kafka, TimescaleDB."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from citysense.clients import (
    connect_database,
    ensure_topics,
    kafka_consumer,
    kafka_producer,
    mqtt_client,
)
from citysense.settings import Settings
from citysense.stack import Stack

pytestmark = pytest.mark.integration


def test_mqtt_publish_and_receive_qos1(settings: Settings) -> None:
    topic = f"test/{uuid.uuid4().hex}"
    received: list[bytes] = []
    got_all = threading.Event()
    subscribed = threading.Event()

    sub, host, port = mqtt_client(settings.mqtt, f"sub-{uuid.uuid4().hex[:8]}")

    def on_connect(client: mqtt.Client, *_args: object) -> None:
        client.subscribe(topic, qos=1)

    def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        if len(received) == 50:
            got_all.set()

    sub.on_connect = on_connect
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_message = on_message
    sub.connect(host, port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        pub, host, port = mqtt_client(settings.mqtt, f"pub-{uuid.uuid4().hex[:8]}")
        pub.connect(host, port)
        pub.loop_start()
        infos = [pub.publish(topic, f"m{i}".encode(), qos=1) for i in range(50)]
        for info in infos:
            info.wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        assert got_all.wait(10)
        assert received == [f"m{i}".encode() for i in range(50)]
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_mqtt_refuses_anonymous_clients(stack: Stack) -> None:
    """The broker's password auth is on: a client without credentials is turned away."""
    result: list[ReasonCode] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", stack.mqtt_port)
    client.loop_start()
    try:
        assert done.wait(10)
        assert result[0].is_failure
    finally:
        client.loop_stop()


async def test_kafka_produce_consume_with_group_and_commit(settings: Settings) -> None:
    topic = f"test.{uuid.uuid4().hex}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka, [topic])
    producer = kafka_producer(settings.kafka)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=f"s{i % 5}".encode(), value=f"v{i}".encode())
            for i in range(200)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    # A short session: the embedded broker waits it out before a new member takes over.
    fast = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
    consumer = kafka_consumer(settings.kafka, topic, group_id=group, **fast)
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < 150:
                batch = await consumer.getmany(timeout_ms=1000, max_records=150 - len(values))
                for records in batch.values():
                    values.extend(r.value for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()

    # A new member of the same group resumes after the committed offsets.
    resumed = kafka_consumer(settings.kafka, topic, group_id=group, **fast)
    await resumed.start()
    try:
        rest: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) + len(rest) < 200:
                batch = await resumed.getmany(timeout_ms=1000)
                for records in batch.values():
                    rest.extend(r.value for r in records)
    finally:
        await resumed.stop()
    assert sorted(values + rest) == sorted(f"v{i}".encode() for i in range(200))


async def test_timescaledb_hypertable_and_time_bucket(settings: Settings) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    conn = await connect_database(settings.database, autocommit=True)
    try:
        version = await (
            await conn.execute("SELECT extversion FROM pg_extension WHERE extname='timescaledb'")
        ).fetchone()
        assert version is not None
        await conn.execute(
            f"CREATE TABLE {table} (time timestamptz NOT NULL, level double precision)"
        )
        await conn.execute(f"SELECT create_hypertable('{table}', by_range('time'))")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s)",
                [(start + timedelta(minutes=m), float(m)) for m in range(30)],
            )
        rows = await (
            await conn.execute(
                f"SELECT time_bucket('15 minutes', time) AS b, avg(level), count(*) "
                f"FROM {table} GROUP BY b ORDER BY b"
            )
        ).fetchall()
        assert rows == [
            (start, 7.0, 15),
            (start + timedelta(minutes=15), 22.0, 15),
        ]
        chunks = await (
            await conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = %s",
                (table,),
            )
        ).fetchone()
        assert chunks is not None
        assert chunks[0] >= 1
    finally:
        await conn.close()
