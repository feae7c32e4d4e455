"""Shared helpers of the sink tests: fresh databases, records, producing, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from citysense.clients import ensure_topics, kafka_producer
from citysense.settings import DatabaseSettings, Settings
from citysense.stack import free_port
from schemas import encode, typed_quantities
from tests._proxy import FaultProxy

#: Recent, so the latest views see the test data and retention (90 days) keeps it.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
#: Typed noise quantities the test records leave null.
_NOISE_NULLS = dict.fromkeys(
    sorted(typed_quantities("noise") - {"laeq_db", "lamax_db", "battery_pct"})
)
_SOURCE = {
    "network": "chirpstack",
    "gateway_id": "gw-1",
    "rssi": -80.0,
    "snr": 7.5,
    "f_cnt": 1,
    "dev_eui": None,
    "dedup_id": None,
    "idempotency_key": None,
}


def noise_record(sensor_id: str, i: int, laeq: float | None = None) -> dict[str, Any]:
    """A NoiseMeasurement record: one per (sensor, second i)."""
    return {
        "sensor_id": sensor_id,
        "kind": "noise",
        "observed_at": T0 + timedelta(seconds=i),
        "received_at": T0 + timedelta(seconds=i, milliseconds=150),
        "codec": "test",
        "partial": False,
        "laeq_db": 40.0 + (i % 400) / 10 if laeq is None else laeq,
        "lamax_db": 70.5,
        "battery_pct": 99.0,
        **_NOISE_NULLS,
        "other_values": {"lz_16000hz_db": 12.5} if i % 7 == 0 else {},
        "source": _SOURCE,
    }


def traffic_record(sensor_id: str, i: int) -> dict[str, Any]:
    """A TrafficMeasurement with 2 lines x 2 directions x 3 classes = 12 count rows."""
    return {
        "sensor_id": sensor_id,
        "kind": "traffic",
        "observed_at": T0 + timedelta(minutes=i),
        "received_at": T0 + timedelta(minutes=i, seconds=1),
        "codec": "test",
        "partial": False,
        "battery_pct": 80.0,
        "battery_v": None,
        "board_temperature_c": None,
        "other_values": {},
        "counts": [
            {
                "line": line,
                "direction": direction,
                "traffic_class": cls,
                "count": (i + line) % 9,
                "cumulative": i * 10 + line,
            }
            for line in (1, 2)
            for direction in ("in", "out")
            for cls in ("pedestrian", "bicycle", "car")
        ],
        "source": _SOURCE,
    }


def occupancy_record(sensor_id: str, i: int) -> dict[str, Any]:
    return {
        "sensor_id": sensor_id,
        "kind": "occupancy",
        "observed_at": T0 + timedelta(minutes=i),
        "received_at": T0 + timedelta(minutes=i, seconds=1),
        "codec": "test",
        "partial": False,
        "battery_pct": None,
        "battery_v": None,
        "board_temperature_c": None,
        "other_values": {},
        "regions": [{"region": r, "count": i % 30 + r} for r in (1, 2, 3)],
        "source": _SOURCE,
    }


def aggregate_record(
    key: str,
    bucket: int,
    *,
    revision: int = 0,
    final: bool = True,
    laeq: float = 55.0,
    kind: str = "noise",
    window_s: int = 60,
) -> dict[str, Any]:
    start = T0 + timedelta(seconds=window_s * bucket)
    return {
        "key": key,
        "kind": kind,
        "window_start": start,
        "window_end": start + timedelta(seconds=window_s),
        "window_size_seconds": window_s,
        "revision": revision,
        "final": final,
        "values": {"laeq_db": laeq, "la90_db": laeq - 5},
        "sample_count": 60,
        "counts": [],
        "regions": [],
    }


def framed(schema: str, records: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs as ingest or the aggregator would produce them."""
    out = []
    for record in records:
        key = record.get("sensor_id") or record["key"]
        out.append((str(key).encode(), encode(schema, record)))
    return out


async def produce(settings: Settings, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> None:
    await ensure_topics(settings.kafka, [topic])
    producer = kafka_producer(settings.kafka)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def fresh_database(settings: Settings) -> AsyncIterator[Settings]:
    """A new empty database on the test server; settings pointing at it; dropped afterwards."""
    name = f"sink_{uuid.uuid4().hex[:12]}"
    admin_url = settings.database.url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    try:
        yield settings.model_copy(update={"database": DatabaseSettings(url=url)})
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute(query, params)).fetchone()
        return None if row is None else row[0]


async def wait_until(
    check: Callable[[], Awaitable[bool]], within_s: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(interval)


def postgres_proxy(postgres_port: int) -> FaultProxy:
    """A started fault proxy in front of the test stack's PostgreSQL (the caller stops it)."""
    proxy = FaultProxy(free_port(), postgres_port, name="postgres")
    proxy.start()
    return proxy


def through_proxy(db: Settings, proxy: FaultProxy, **update: Any) -> Settings:
    """``db`` (and ``update``) with its database reached through ``proxy``."""
    url = db.database.url.get_secret_value()
    proxied = url.replace(f":{proxy.target_port}/", f":{proxy.listen_port}/")
    return db.model_copy(update={"database": DatabaseSettings(url=proxied), **update})
