"""Gather one :class:`Snapshot` of the running pipeline from its three sources.

- The stages' ``/metrics`` endpoints (every port of ``Settings.metrics_ports()``), scraped twice
  ``interval`` apart for rates; an endpoint that does not answer is a stage not running, not an
  error.
- Kafka, for the consumer groups' lag (:mod:`citysense.status._lag`).
- TimescaleDB, for the sink's stored offsets and each site's newest indicators.

A source that cannot be reached becomes a line in ``Snapshot.problems`` (URLs masked), never an
exception: the view must keep showing what it can while a dependency is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
from aiokafka import TopicPartition

from citysense.settings import Settings, mask_url
from citysense.status._database import SiteIndicator, latest_site_indicators, sink_positions
from citysense.status._lag import GroupLag, group_lag, high_watermarks, kafka_positions
from citysense.status._metrics import Scrape, StageRate, counter_rate, merge_scrapes, stage_rates
from schemas import aggregate_topic, measurement_topic

__all__ = ["Snapshot", "collect", "metrics_endpoints", "scrape", "snapshot_as_json"]

_HTTP_TIMEOUT_S = 2.0
_KAFKA_TIMEOUT_S = 10.0
_DB_TIMEOUT_S = 5.0

DEAD_LETTER_COUNTERS = (
    "citysense_ingest_dead_letters_total",
    "citysense_aggregate_dead_letters_total",
    "citysense_sink_dead_letters_total",
)
LATE_COUNTER = "citysense_aggregate_late_records_total"


@dataclass(frozen=True)
class Snapshot:
    """Everything the status view shows at one instant."""

    taken_at: datetime
    interval_s: float
    stages: list[StageRate]
    #: endpoint (``<stage>@<port>``) → resident memory in bytes, for each process that answered
    processes: dict[str, float | None]
    lags: list[GroupLag]
    dead_letters: float | None
    dead_letter_rate: float | None
    late_records: float | None
    late_rate: float | None
    #: the largest wall clock minus watermark delay of the aggregator's stages, seconds
    watermark_delay_s: float | None
    #: messages Mosquitto holds (retained and queued for the durable ingest session)
    mqtt_queued: float | None
    sites: list[SiteIndicator]
    problems: list[str] = field(default_factory=list)


def metrics_endpoints(settings: Settings) -> dict[str, str]:
    """``<stage>@<port>`` → ``/metrics`` URL of every stage's port, each port once."""
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104  (a bind-all address: scrape loopback)
        host = "127.0.0.1"
    endpoints: dict[str, str] = {}
    seen: set[int] = set()
    for stage, port in settings.metrics_ports().items():
        if port in seen or port == 0:
            continue
        seen.add(port)
        endpoints[f"{stage}@{port}"] = f"http://{host}:{port}/metrics"
    return endpoints


async def _fetch(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def scrape(endpoints: Mapping[str, str]) -> Scrape:
    """Read every endpoint concurrently; those that do not answer are left out."""
    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        texts = await asyncio.gather(*(_fetch(session, url) for url in endpoints.values()))
    at = time.monotonic()
    answered = {name: text for name, text in zip(endpoints, texts, strict=True) if text}
    try:
        return merge_scrapes(at, answered)
    except ValueError:
        # Not Prometheus text (another program on the port): as if nothing answered.
        return Scrape(at=at)


async def _lags(
    settings: Settings, problems: list[str]
) -> tuple[list[GroupLag], dict[TopicPartition, int] | None]:
    """The aggregator groups' lag and every partition's end (None when Kafka cannot be read);
    the sink's lag needs its offsets from the database, so it is computed by the caller."""
    aggregate = settings.aggregate
    window_topics = [measurement_topic(kind) for kind in aggregate.kinds]
    rollup_topics = [aggregate_topic(kind) for kind in aggregate.kinds]
    sink_topics = list(settings.sink.topics)
    # (stage, consumer group shown, topics). The aggregator's lag is read from its side group
    # ``<group>.position`` (the next offset to read); the consumer group itself commits the
    # lowest offset an open window still needs, which trails by up to a window's length.
    groups: list[tuple[str, str, list[str]]] = [
        ("aggregate", aggregate.group_id, window_topics),
        ("aggregate rollup", aggregate.rollup_group_id, rollup_topics),
    ]
    try:
        async with asyncio.timeout(_KAFKA_TIMEOUT_S):
            ends = await high_watermarks(
                settings.kafka, {*window_topics, *rollup_topics, *sink_topics}
            )
    except Exception as exc:  # any Kafka failure is a line in the view, not a crash
        problems.append(
            f"Kafka at {settings.kafka.bootstrap}: {_reason(exc)}; check CITYSENSE_KAFKA_BOOTSTRAP"
        )
        return [group_lag(stage, group, topics, {}, None) for stage, group, topics in groups], None
    lags: list[GroupLag] = []
    for stage, group, topics in groups:
        wanted = [tp for tp in ends if tp.topic in topics]
        positions: dict[TopicPartition, int] | None
        try:
            async with asyncio.timeout(_KAFKA_TIMEOUT_S):
                positions = await kafka_positions(settings.kafka, f"{group}.position", wanted)
        except Exception as exc:  # as above
            problems.append(f"Kafka group {group}: {_reason(exc)}")
            positions = None
        lags.append(group_lag(stage, group, topics, ends, positions))
    return lags, ends


async def _database(
    settings: Settings, problems: list[str]
) -> tuple[list[SiteIndicator], dict[TopicPartition, int] | None]:
    url = settings.database.url.get_secret_value()
    try:
        async with asyncio.timeout(_DB_TIMEOUT_S):
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, round(_DB_TIMEOUT_S))
            )
    except (psycopg.Error, TimeoutError, OSError) as exc:
        problems.append(f"database {mask_url(url)}: {_reason(exc)}; check CITYSENSE_DATABASE_URL")
        return [], None
    try:
        async with asyncio.timeout(_DB_TIMEOUT_S):
            return (
                await latest_site_indicators(conn),
                await sink_positions(conn, settings.sink.group_id),
            )
    except psycopg.errors.UndefinedTable:
        problems.append("database has no citysense tables yet (`citysense db migrate`)")
        return [], None
    except (psycopg.Error, TimeoutError) as exc:
        problems.append(f"database {mask_url(url)}: {_reason(exc)}")
        return [], None
    finally:
        await conn.close()


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().removeprefix(name).lstrip(": ")
    first = text.splitlines()[0][:200] if text else ""
    return f"{name}: {first}" if first else name


async def collect(
    settings: Settings,
    previous: Scrape | None = None,
    interval_s: float = 2.0,
    endpoints: Mapping[str, str] | None = None,
) -> tuple[Snapshot, Scrape]:
    """One snapshot and the scrape it ended with (the ``previous`` of the next call).

    Without ``previous``, the endpoints are scraped once, then again ``interval_s`` later
    while Kafka and the database are read; with it, once, and rates cover the time since.
    ``endpoints`` (name → ``/metrics`` URL) replaces the settings' ports, for stages on other
    ports (the benchmarks run each stage on a free one).
    """
    if endpoints is None:
        endpoints = metrics_endpoints(settings)
    problems: list[str] = []
    if previous is None:
        previous = await scrape(endpoints)
        pause: asyncio.Future[Any] | asyncio.Task[None] = asyncio.ensure_future(
            asyncio.sleep(interval_s)
        )
    else:
        pause = asyncio.ensure_future(asyncio.sleep(0))
    (lags, ends), (sites, stored) = await asyncio.gather(
        _lags(settings, problems), _database(settings, problems)
    )
    await pause
    current = await scrape(endpoints)
    sink_topics = list(settings.sink.topics)
    lags.append(
        group_lag(
            "sink",
            settings.sink.group_id,
            sink_topics,
            ends or {},
            None if ends is None else stored,
        )
    )
    dead = [current.total(name) for name in DEAD_LETTER_COUNTERS]
    dead_rates = [counter_rate(previous, current, name) for name in DEAD_LETTER_COUNTERS]
    snapshot = Snapshot(
        taken_at=datetime.now(UTC),
        interval_s=current.at - previous.at,
        stages=stage_rates(previous, current),
        processes=dict(current.processes),
        lags=lags,
        dead_letters=_sum(dead),
        dead_letter_rate=_sum(dead_rates),
        late_records=current.total(LATE_COUNTER),
        late_rate=counter_rate(previous, current, LATE_COUNTER),
        watermark_delay_s=current.maxima.get("citysense_aggregate_watermark_delay_seconds"),
        mqtt_queued=current.total("citysense_ingest_broker_stored_messages"),
        sites=sites,
        problems=problems,
    )
    return snapshot, current


def snapshot_as_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-ready data (times in ISO 8601), for scripts and benchmarks."""
    data: dict[str, Any] = dataclasses.asdict(snapshot)
    data["taken_at"] = snapshot.taken_at.isoformat()
    for site in data["sites"]:
        site["bucket_end"] = site["bucket_end"].isoformat()
    for lag in data["lags"]:
        lag["topics"] = list(lag["topics"])
    return data


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
