"""The PM2.5 map (qualite-air-carte-pm25) on the real TimescaleDB and the real API stage: cell
results written as the sink writes them, the view, geo_shape fields, the GeoJSON export checked
against the GeoJSON project's JSON Schema and RFC 7946's ring rules."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from citysense.settings import DatabaseSettings, PublishSettings, Settings
from sinks.opendata import PublishService, default_catalog
from streams._grid import parse_cell_id
from tests.sinks.opendata._db import cell, fetch, opendata_database, write_cells

pytestmark = pytest.mark.integration

T = datetime(2026, 6, 1, 8, tzinfo=UTC)
CELL_A = "CRS3035RES100mN2889400E3760700"
CELL_B = "CRS3035RES100mN2889500E3760700"
GEOJSON_SCHEMA = json.loads(
    (Path(__file__).parent / "geojson" / "FeatureCollection.json").read_text()
)
DATASET = "/api/explore/v2.1/catalog/datasets/qualite-air-carte-pm25"


@dataclass(frozen=True)
class Api:
    base: str
    db_url: str


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with opendata_database(settings) as db_url:
        await write_cells(
            db_url,
            [
                cell(CELL_A, T, 900, 12.5, samples=6, band=2),
                cell(CELL_A, T, 3600, 14.25, samples=20, band=2),
                cell(CELL_B, T, 3600, 55.0, samples=9, vehicles=2, band=4),
            ],
        )
        # A late revision of CELL_A's quarter, and a lower one arriving after it: the higher
        # revision stays.
        await write_cells(db_url, [cell(CELL_A, T, 900, 13.0, samples=8)])
        await write_cells(db_url, [cell(CELL_A, T, 900, 99.0, samples=7)])
        publish = PublishSettings(port=0, rate_limit="100000/minute")
        config = Settings(database=DatabaseSettings(url=db_url), publish=publish)
        service = PublishService(config, default_catalog(publish))
        await service.start()
        try:
            yield Api(f"http://127.0.0.1:{service.port}", db_url)
        finally:
            await service.stop()


async def _get(api: Api, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        return await client.get(path, params=params)


async def test_the_view_has_one_row_per_cell_and_window_with_shape_and_centre(api: Api) -> None:
    rows = await fetch(
        api.db_url,
        "SELECT * FROM opendata.air_cells_pm25 ORDER BY cell_id, window_minutes",
    )
    assert [(r["cell_id"], r["window_minutes"]) for r in rows] == [
        (CELL_A, 15),
        (CELL_A, 60),
        (CELL_B, 60),
    ]
    quarter = rows[0]
    assert quarter["pm2_5_ugm3_mean"] == 13.0  # revision 8 kept, not the later revision 7
    assert quarter["sample_count"] == 8
    assert quarter["start_time"] == T
    assert quarter["end_time"] == T + timedelta(minutes=15)
    assert rows[2]["eaqi_label"] == "Poor"  # band 4 in the EEA's names
    shape = quarter["geo_shape"]
    assert shape["type"] == "Feature"
    assert shape["properties"] == {}
    ring = shape["geometry"]["coordinates"][0]
    assert shape["geometry"]["type"] == "Polygon"
    assert len(ring) == 5
    assert ring[0] == ring[-1]
    corners = parse_cell_id(CELL_A).corners()
    assert [tuple(p) for p in ring[:4]] == list(corners)
    centre = quarter["geo_point_2d"]
    assert centre["lon"] == pytest.approx(sum(c[0] for c in corners) / 4)
    assert centre["lat"] == pytest.approx(sum(c[1] for c in corners) / 4)


async def test_the_geojson_export_is_valid_geojson_with_the_cells_as_polygons(api: Api) -> None:
    response = await _get(api, f"{DATASET}/exports/geojson", where="window_minutes = 60")
    assert response.status_code == 200
    collection = orjson.loads(response.content)
    jsonschema.validate(collection, GEOJSON_SCHEMA)
    features = sorted(collection["features"], key=lambda f: f["properties"]["cell_id"])
    assert [f["properties"]["cell_id"] for f in features] == [CELL_A, CELL_B]
    for feature in features:
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        ring = geometry["coordinates"][0]
        # RFC 7946 3.1.6: closed, and the exterior ring counter-clockwise (positive area).
        assert ring[0] == ring[-1]
        area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(ring))
        assert area > 0
        # The shape is the geometry, not a property; the centre stays a property.
        assert "geo_shape" not in feature["properties"]
        assert set(feature["properties"]["geo_point_2d"]) == {"lon", "lat"}
    assert features[1]["properties"]["pm2_5_ugm3_mean"] == 55.0


async def test_without_the_shape_the_geojson_export_falls_back_to_the_point(api: Api) -> None:
    response = await _get(
        api, f"{DATASET}/exports/geojson", select="cell_id, geo_point_2d", limit=1
    )
    collection = orjson.loads(response.content)
    jsonschema.validate(collection, GEOJSON_SCHEMA)
    assert collection["features"][0]["geometry"]["type"] == "Point"


async def test_records_and_csv_carry_the_shape(api: Api) -> None:
    response = await _get(
        api, f"{DATASET}/records", select="cell_id, geo_shape", where=f"cell_id = '{CELL_B}'"
    )
    assert response.status_code == 200
    (record,) = response.json()["results"]
    assert record["geo_shape"]["type"] == "Feature"
    assert record["geo_shape"]["geometry"]["type"] == "Polygon"
    response = await _get(api, f"{DATASET}/exports/csv", select="cell_id, geo_shape")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["cell_id", "geo_shape"]
    geometry = json.loads(rows[1][1])
    assert geometry["type"] == "Polygon"


@pytest.mark.parametrize(
    "params",
    [
        {"where": "geo_shape = 'x'"},
        {"order_by": "geo_shape"},
        {"group_by": "geo_shape", "select": "geo_shape"},
        {"refine": "geo_shape:x"},
        {"where": "within_distance(geo_shape, geom'POINT(2.35 48.85)', 1km)"},
    ],
    ids=["compare", "order", "group", "refine", "distance"],
)
async def test_a_shape_is_selectable_but_never_compared_ordered_or_grouped(
    api: Api, params: dict[str, str]
) -> None:
    response = await _get(api, f"{DATASET}/records", **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] in ("ODSQLError", "InvalidRESTParameterError")
    assert "geo_shape" in body["message"] or "geo_point_2d" in body["message"]


async def test_the_catalogue_lists_the_shape_field(api: Api) -> None:
    response = await _get(api, DATASET)
    fields = {f["name"]: f["type"] for f in response.json()["fields"]}
    assert fields["geo_shape"] == "geo_shape"
    assert fields["geo_point_2d"] == "geo_point_2d"
    assert default_catalog(PublishSettings()).get("qualite-air-carte-pm25").shape_field == (
        "geo_shape"
    )
