"""Mobile sensors end to end on their own real stack: the pollutrack fleet for ten simulated
minutes → ingest → the grid stage → the sink → the map dataset. The published cells equal a
batch computation from the raw table (same cells, counts, vehicles, means, maxima; none below
the privacy thresholds), and the dataset's GeoJSON export is valid GeoJSON.

A stack of its own: the simulated minutes lie two hours back, which would be late behind the
event times other tests leave on the shared stack's topics.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import orjson
import psycopg
import pytest
from playwright.async_api import async_playwright, expect

from citysense.registry import load_registry, scenario_path
from citysense.runtime import Component
from citysense.settings import (
    AggregateSettings,
    DailySettings,
    DatabaseSettings,
    GridSettings,
    IngestSettings,
    KafkaSettings,
    MqttSettings,
    PublishSettings,
    Settings,
    SinkSettings,
    WindowSettings,
)
from citysense.stack import Stack, temporary_stack
from ingest import IngestService
from simulators import Fleet, Publisher
from simulators._vehicles import load_routes
from sinks.opendata import PublishService, publication_components
from sinks.timescale import TimescaleSink
from streams import AggregateService
from streams._grid import cells_of

pytestmark = pytest.mark.integration

MIN_SAMPLES = 3
MIN_VEHICLES = 2
OUT_OF_ORDERNESS_S = 10.0
GRID_WINDOWS = (
    WindowSettings(name="15m", size_s=900, grace_s=10.0, allowed_lateness_s=900.0),
    WindowSettings(name="1h", size_s=3600, grace_s=30.0, allowed_lateness_s=900.0),
)
GEOJSON_SCHEMA = json.loads(
    (
        Path(__file__).parents[1] / "sinks" / "opendata" / "geojson" / "FeatureCollection.json"
    ).read_text()
)


def _artifacts() -> Path:
    path = Path(
        os.environ.get("CITYSENSE_TEST_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    with temporary_stack("citysense-grid-", only=("mosquitto", "kafka", "postgres")) as stack:
        yield stack


@pytest.fixture(scope="module")
def own_settings(own_stack: Stack) -> Settings:
    env = own_stack.env()
    return Settings(
        mqtt=MqttSettings(url=env["CITYSENSE_MQTT_URL"], client_id="grid-ingest"),
        kafka=KafkaSettings(bootstrap=env["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False),
        database=DatabaseSettings(url=env["CITYSENSE_DATABASE_URL"]),
        ingest=IngestSettings(linger_ms=2),
        sink=SinkSettings(batch_max_wait_s=0.2),
        aggregate=AggregateSettings(
            kinds=("air",),
            windows=(WindowSettings(name="1h", size_s=3600, scopes=("sensor",)),),
            daily=DailySettings(enabled=False),
            out_of_orderness_s=OUT_OF_ORDERNESS_S,
            idle_timeout_s=10.0,
            commit_interval_s=1.0,
            grid=GridSettings(
                windows=GRID_WINDOWS, min_samples=MIN_SAMPLES, min_vehicles=MIN_VEHICLES
            ),
        ),
    )


def _ten_minutes() -> tuple[list[Any], datetime, datetime]:
    """The pollutrack fleet (30 vehicles, one message each every 10 s) for ten simulated
    minutes across an hour's end two hours back: from hh:52 to hh+1:02. The quarter hh:45-hh:60
    and the hour hh:00-hh:60 close (the watermark reaches hh+1:01:50); later ones stay open."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    start = hour + timedelta(minutes=52)
    end = start + timedelta(minutes=10)
    path = scenario_path("pollutrack")
    registry = load_registry(path)
    moment = [start]
    fleet = Fleet(registry, seed=5, clock=lambda: moment[0], replay=True, routes=load_routes(path))
    messages: list[Any] = []
    while moment[0] < end:
        messages += fleet.next_batch(len(fleet.sensors))
        moment[0] += timedelta(seconds=10)
    return messages, start, end


def _publish(settings: Settings, messages: list[Any]) -> None:
    with Publisher(settings.mqtt, f"grid-pub-{uuid.uuid4().hex[:8]}") as publisher:
        for first in range(0, len(messages), 500):
            publisher.publish_batch(messages[first : first + 500])
        publisher.wait_acked()


async def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(
        settings.database.url.get_secret_value()
    ) as conn:
        cursor = await conn.execute(sql)
        return await cursor.fetchall()


def _batch(
    raw: list[tuple[Any, ...]], last_event: datetime
) -> dict[tuple[str, int, datetime], Any]:
    """The cells a batch computation over the raw rows publishes: per window definition, cell
    and window start, the samples of mobile sensors with a fix and a PM2.5 value, for windows
    the stage's watermark has closed (end + grace at or below the last event time minus the
    out-of-orderness bound); only those meeting both thresholds."""
    times = [r[0] for r in raw]
    sensors = [r[1] for r in raw]
    pm = np.array([r[2] for r in raw], dtype=np.float64)
    north, east, ok = cells_of(
        np.array([r[3] for r in raw], dtype=np.float64),
        np.array([r[4] for r in raw], dtype=np.float64),
    )
    watermark = last_event - timedelta(seconds=OUT_OF_ORDERNESS_S)
    groups: dict[tuple[str, int, datetime], list[tuple[str, float]]] = defaultdict(list)
    for i, moment in enumerate(times):
        if not ok[i]:
            continue
        cell = f"CRS3035RES100mN{int(north[i])}E{int(east[i])}"
        for w in GRID_WINDOWS:
            epoch = int(moment.timestamp())
            start = datetime.fromtimestamp(epoch - epoch % w.size_s, UTC)
            if start + timedelta(seconds=w.size_s + w.grace_s) <= watermark:
                groups[(cell, w.size_s, start)].append((sensors[i], float(pm[i])))
    published = {}
    for identity, samples in groups.items():
        vehicles = {sensor for sensor, _ in samples}
        if len(samples) >= MIN_SAMPLES and len(vehicles) >= MIN_VEHICLES:
            values = [value for _, value in samples]
            published[identity] = (
                len(samples),
                len(vehicles),
                sum(values) / len(values),
                max(values),
            )
    return published


async def test_ten_minutes_of_the_fleet_publish_the_cells_a_batch_computes(
    own_settings: Settings,
) -> None:
    messages, start, end = _ten_minutes()
    registry = load_registry(scenario_path("pollutrack"))
    components: list[Component] = [
        TimescaleSink(own_settings, own_settings.sink, registry),
        AggregateService(own_settings, registry),
        IngestService(own_settings, registry),
    ]
    for component in components:
        await component.start()
    try:
        await asyncio.to_thread(_publish, own_settings, messages)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ((raw_count,),) = await _rows(own_settings, "SELECT count(*) FROM air_measurements")
            hours = await _rows(
                own_settings,
                "SELECT count(*) FROM air_cell_aggregates WHERE window_seconds = 3600",
            )
            if raw_count == len(messages) and hours[0][0]:
                break
            await asyncio.sleep(1)
        # The sink writes each batch of cells in one transaction; give the last ones a moment.
        await asyncio.sleep(3)
    finally:
        for component in reversed(components):
            await component.stop()
    raw = await _rows(
        own_settings,
        "SELECT m.time, m.sensor_id, m.pm2_5_ugm3, m.lat, m.lon FROM air_measurements AS m "
        "JOIN sensors AS s ON s.id = m.sensor_id "
        "WHERE s.mobile AND m.lat IS NOT NULL AND m.pm2_5_ugm3 IS NOT NULL ORDER BY m.time",
    )
    ((unpositioned,),) = await _rows(
        own_settings, "SELECT count(*) FROM air_measurements WHERE lat IS NULL"
    )
    assert len(raw) + unpositioned == len(messages)
    assert unpositioned > 0  # the Tuileries tunnel: kept raw, left out of the map
    last_event = max(r[0] for r in raw)
    assert last_event >= end - timedelta(seconds=20)
    expected = _batch(raw, last_event)
    cells = await _rows(
        own_settings,
        "SELECT cell_id, window_seconds, bucket, sample_count, vehicle_count, pm2_5_ugm3_mean, "
        "pm2_5_ugm3_max, revision, final FROM air_cell_aggregates",
    )
    got = {(c[0], c[1], c[2]): c[3:] for c in cells}
    assert expected, "no cell met the thresholds: the scenario or the thresholds changed"
    assert {w for _, w, _ in expected} == {900, 3600}
    assert set(got) == set(expected)
    for identity, (samples, vehicles, mean, maximum) in expected.items():
        got_samples, got_vehicles, got_mean, got_max, revision, final = got[identity]
        assert (got_samples, got_vehicles) == (samples, vehicles), identity
        assert got_mean == pytest.approx(mean, abs=1e-4), identity
        assert got_max == pytest.approx(maximum, abs=1e-4), identity
        assert revision == samples
        assert final
    # The thresholds bit: the batch has cells below them, and none of those was published.
    assert len({(c, w, s) for c, w, s in _all_groups(raw, last_event)}) > len(expected)

    # The map dataset through the real publication API: valid GeoJSON with the cells' polygons.
    publish = PublishSettings(port=0, rate_limit="100000/minute")
    config = Settings(database=own_settings.database, publish=publish)
    (service,) = publication_components(config)  # the stage: API, live feed, display page
    assert isinstance(service, PublishService)
    await service.start()
    hourly = sum(1 for _, w, _ in expected if w == 3600)
    try:
        base = f"http://127.0.0.1:{service.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            response = await client.get(
                "/api/explore/v2.1/catalog/datasets/qualite-air-carte-pm25/exports/geojson"
            )
        # The display page's map layer: the closed hour's cells, in headless Chromium.
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True
            )
            try:
                page = await browser.new_page(viewport={"width": 1366, "height": 900})
                await page.goto(f"{base}/")
                await expect(page.locator("#map-svg polygon.cell")).to_have_count(
                    hourly, timeout=30_000
                )
                await page.locator("#map").screenshot(path=str(_artifacts() / "pollutrack-map.png"))
            finally:
                await browser.close()
    finally:
        await service.stop()
    assert response.status_code == 200
    collection = orjson.loads(response.content)
    jsonschema.validate(collection, GEOJSON_SCHEMA)
    assert len(collection["features"]) == len(expected)
    assert {f["geometry"]["type"] for f in collection["features"]} == {"Polygon"}
    assert {f["properties"]["cell_id"] for f in collection["features"]} == {
        c for c, _, _ in expected
    }
    assert start < last_event


def _all_groups(raw: list[tuple[Any, ...]], last_event: datetime) -> set[tuple[str, int, Any]]:
    """Every (cell, window, start) of the closed windows that holds a sample, thresholds aside."""
    north, east, ok = cells_of(
        np.array([r[3] for r in raw], dtype=np.float64),
        np.array([r[4] for r in raw], dtype=np.float64),
    )
    watermark = last_event - timedelta(seconds=OUT_OF_ORDERNESS_S)
    out = set()
    for i, row in enumerate(raw):
        if not ok[i]:
            continue
        epoch = int(row[0].timestamp())
        for w in GRID_WINDOWS:
            begin = datetime.fromtimestamp(epoch - epoch % w.size_s, UTC)
            if begin + timedelta(seconds=w.size_s + w.grace_s) <= watermark:
                out.add((f"CRS3035RES100mN{int(north[i])}E{int(east[i])}", w.size_s, begin))
    return out
