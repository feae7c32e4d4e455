"""The publication API served by the real stage (uvicorn on loopback) over a migrated TimescaleDB:
records, catalogue, exports, v1 search, errors, limits, CORS, rate limit."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pyarrow.parquet as pq
import pytest
import rdflib

from citysense.settings import DatabaseSettings, PublishSettings, Settings
from sinks.opendata import PublishService, default_catalog
from tests.sinks.opendata._db import REGISTRY, opendata_database, window, write_windows

pytestmark = pytest.mark.integration

#: 2 sensors x 3,000 hours: more rows than one export block (5,000).
HOURS = 3000
START = datetime(2026, 3, 1, tzinfo=UTC)
SENSORS = ("noise-a", "noise-b")


def laeq(sensor: str, hour: int) -> float:
    return round(40.0 + (hour * 7 + (13 if sensor == "noise-b" else 0)) % 400 / 10, 2)


@dataclass(frozen=True)
class Api:
    base: str
    db_url: str


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with opendata_database(settings) as db_url:
        windows = [
            window(
                sensor,
                "noise",
                START + timedelta(hours=h),
                3600,
                {"laeq_db": laeq(sensor, h), "lamax_db": laeq(sensor, h) + 10.0},
            )
            for sensor in SENSORS
            for h in range(HOURS)
        ]
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await write_windows(conn, windows)
        service = _service(db_url, rate_limit="100000/minute")
        await service.start()
        try:
            yield Api(f"http://127.0.0.1:{service.port}", db_url)
        finally:
            await service.stop()


def _service(db_url: str, *, rate_limit: str) -> PublishService:
    publish = PublishSettings(port=0, rate_limit=rate_limit)
    config = Settings(database=DatabaseSettings(url=db_url), publish=publish)
    return PublishService(config, default_catalog(publish))


async def _get(api: Api, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        return await client.get(path, params=params)


RECORDS = "/api/explore/v2.1/catalog/datasets/bruit-horaire/records"
EXPORTS = "/api/explore/v2.1/catalog/datasets/bruit-horaire/exports"


async def test_records_page_is_the_newest_hours_with_every_field(api: Api) -> None:
    response = await _get(api, RECORDS)
    assert response.status_code == 200
    body = response.json()
    assert body["total_count"] == len(SENSORS) * HOURS
    results = body["results"]
    assert len(results) == 10  # the portal's default limit
    fields = [f.name for f in default_catalog(PublishSettings()).get("bruit-horaire").fields]
    assert all(list(r) == fields for r in results)
    starts = [datetime.fromisoformat(r["start_time"]) for r in results]
    assert starts == sorted(starts, reverse=True)
    assert starts[0] == START + timedelta(hours=HOURS - 1)
    for r in results:
        hour = int((datetime.fromisoformat(r["start_time"]) - START) / timedelta(hours=1))
        assert r["laeq_db"] == laeq(r["sensor_id"], hour)
        sensor = REGISTRY.sensors[r["sensor_id"]]
        assert r["geo_point_2d"] == {"lon": sensor.lon, "lat": sensor.lat}


async def test_where_select_order_and_paging_match_a_computation_in_python(api: Api) -> None:
    expected = sorted((laeq("noise-a", h), h) for h in range(HOURS) if laeq("noise-a", h) > 75.5)
    response = await _get(
        api,
        RECORDS,
        select="start_time, laeq_db",
        where='laeq_db > 75.5 and sensor_id = "noise-a"',
        order_by="laeq_db asc, start_time asc",
        limit=20,
        offset=5,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total_count"] == len(expected)
    got = [
        (r["laeq_db"], int((datetime.fromisoformat(r["start_time"]) - START) / timedelta(hours=1)))
        for r in body["results"]
    ]
    assert got == expected[5:25]
    assert all(set(r) == {"start_time", "laeq_db"} for r in body["results"])


async def test_group_by_gives_each_sensors_mean(api: Api) -> None:
    response = await _get(
        api,
        RECORDS,
        select="sensor_id, avg(laeq_db) as mean, count(*) as n",
        group_by="sensor_id",
        order_by="sensor_id",
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["sensor_id"] for r in results] == list(SENSORS)
    for r in results:
        values = [laeq(r["sensor_id"], h) for h in range(HOURS)]
        assert r["n"] == HOURS
        assert math.isclose(r["mean"], sum(values) / HOURS, rel_tol=1e-9)


async def test_timezone_shifts_datetimes_and_an_unknown_one_is_a_400(api: Api) -> None:
    response = await _get(api, RECORDS, timezone="Europe/Paris", limit=1)
    start = response.json()["results"][0]["start_time"]
    assert start.endswith(("+01:00", "+02:00"))
    assert datetime.fromisoformat(start) == START + timedelta(hours=HOURS - 1)
    bad = await _get(api, RECORDS, timezone="Mars/Olympus")
    assert bad.status_code == 400
    assert bad.json()["error_code"] == "InvalidRESTParameterError"


@pytest.mark.parametrize(
    ("params", "error_code", "names"),
    [
        ({"limit": 101}, "InvalidRESTParameterError", "limit"),
        ({"limit": 100, "offset": 9950}, "InvalidRESTParameterError", "offset"),
        ({"where": "laeq_db >"}, "ODSQLError", "where"),
        ({"where": "nosuchfield = 1"}, "ODSQLError", "nosuchfield"),
        ({"select": "avg(sensor_id)"}, "ODSQLError", "select"),
        ({"order_by": "laeq_db; drop table sites"}, "ODSQLError", "order_by"),
        ({"limit": "ten"}, "InvalidRESTParameterError", "limit"),
        ({"lang": "de"}, "InvalidRESTParameterError", "lang"),
    ],
)
async def test_a_bad_query_is_a_400_with_the_portals_error_body(
    api: Api, params: dict[str, Any], error_code: str, names: str
) -> None:
    response = await _get(api, RECORDS, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status_code"] == 400
    assert body["error_code"] == error_code
    assert names in body["message"]


async def test_unknown_dataset_and_unknown_path_are_404_with_the_error_body(api: Api) -> None:
    response = await _get(api, "/api/explore/v2.1/catalog/datasets/nope/records")
    assert response.status_code == 404
    assert response.json()["error_code"] == "UnknownDatasetError"
    response = await _get(api, "/api/explore/v2.1/nothing-here")
    assert response.status_code == 404
    assert response.json()["status_code"] == 404


async def test_nothing_is_writable(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base) as client:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = await client.request(method, RECORDS)
            assert response.status_code == 405, method
            assert response.json()["error_code"] == "MethodNotAllowed"


async def test_catalogue_lists_every_dataset_with_fields_and_both_languages(api: Api) -> None:
    catalog = default_catalog(PublishSettings())
    response = await _get(api, "/api/explore/v2.1/catalog/datasets", limit=100)
    body = response.json()
    assert body["total_count"] == len(catalog)
    assert [d["dataset_id"] for d in body["results"]] == [d.id for d in catalog]
    noise = (await _get(api, "/api/explore/v2.1/catalog/datasets/bruit-horaire")).json()
    assert noise["metas"]["default"]["records_count"] == len(SENSORS) * HOURS
    assert noise["metas"]["default"]["title"] == catalog.get("bruit-horaire").title.fr
    assert noise["metas"]["default"]["license"].startswith("Licence Ouverte")
    laeq_field = next(f for f in noise["fields"] if f["name"] == "laeq_db")
    assert laeq_field["type"] == "double"
    assert laeq_field["annotations"]["unit"]
    path = "/api/explore/v2.1/catalog/datasets/bruit-horaire"
    english = (await _get(api, path, lang="en")).json()
    assert english["metas"]["default"]["title"] == catalog.get("bruit-horaire").title.en


async def _export(api: Api, fmt: str, **params: Any) -> bytes:
    async with (
        httpx.AsyncClient(base_url=api.base, timeout=60) as client,
        client.stream("GET", f"{EXPORTS}/{fmt}", params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert "attachment" in response.headers["content-disposition"]
        return await response.aread()


async def test_csv_export_has_every_row_with_semicolons_and_a_bom(api: Api) -> None:
    body = await _export(api, "csv")
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body[3:].decode()), delimiter=";"))
    header, data = rows[0], rows[1:]
    assert header[:3] == ["sensor_id", "site_id", "site_name"]
    assert len(data) == len(SENSORS) * HOURS  # no row limit, across several blocks
    column = header.index("laeq_db")
    start = header.index("start_time")
    got = {(r[0], datetime.fromisoformat(r[start])): float(r[column]) for r in data}
    assert got == {
        (s, START + timedelta(hours=h)): laeq(s, h) for s in SENSORS for h in range(HOURS)
    }
    geo = header.index("geo_point_2d")
    sensor = REGISTRY.sensors[data[0][0]]
    assert data[0][geo] == f"{sensor.lat}, {sensor.lon}"  # latitude first, like the portal


async def test_json_jsonl_and_geojson_exports_apply_the_query(api: Api) -> None:
    where = 'sensor_id = "noise-b" and laeq_db >= 70'
    expected = sum(1 for h in range(HOURS) if laeq("noise-b", h) >= 70)
    as_json = orjson.loads(await _export(api, "json", where=where))
    assert len(as_json) == expected
    assert all(r["sensor_id"] == "noise-b" and r["laeq_db"] >= 70 for r in as_json)
    lines = (await _export(api, "jsonl", where=where)).decode().splitlines()
    assert [orjson.loads(line) for line in lines] == as_json
    collection = orjson.loads(await _export(api, "geojson", where=where))
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == expected
    sensor = REGISTRY.sensors["noise-b"]
    for feature in collection["features"]:
        assert feature["type"] == "Feature"
        assert feature["geometry"] == {"type": "Point", "coordinates": [sensor.lon, sensor.lat]}
        assert "geo_point_2d" not in feature["properties"]


async def test_parquet_export_reads_back_with_typed_columns(api: Api) -> None:
    table = pq.read_table(io.BytesIO(await _export(api, "parquet")))
    assert table.num_rows == len(SENSORS) * HOURS
    schema = table.schema
    assert str(schema.field("laeq_db").type) == "double"
    assert str(schema.field("start_time").type) == "timestamp[us, tz=UTC]"
    rows = table.select(["sensor_id", "start_time", "laeq_db"]).to_pylist()
    assert {(r["sensor_id"], r["start_time"]): r["laeq_db"] for r in rows} == {
        (s, START + timedelta(hours=h)): laeq(s, h) for s in SENSORS for h in range(HOURS)
    }


async def test_an_unknown_export_format_is_a_400(api: Api) -> None:
    response = await _get(api, f"{EXPORTS}/xlsx")
    assert response.status_code == 400
    assert "csv" in response.json()["message"]


async def test_v1_search_refines_counts_facets_and_gives_points_latitude_first(api: Api) -> None:
    response = await _get(
        api,
        "/api/records/1.0/search/",
        dataset="bruit-horaire",
        rows=5,
        **{"refine.sensor_id": "noise-a", "facet": "sensor_id"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nhits"] == HOURS
    assert len(body["records"]) == 5
    sensor = REGISTRY.sensors["noise-a"]
    for record in body["records"]:
        assert record["datasetid"] == "bruit-horaire"
        assert record["fields"]["sensor_id"] == "noise-a"
        assert record["fields"]["geo_point_2d"] == [sensor.lat, sensor.lon]
        assert record["geometry"]["coordinates"] == [sensor.lon, sensor.lat]
    assert len({r["recordid"] for r in body["records"]}) == 5
    (group,) = body["facet_groups"]
    assert group["name"] == "sensor_id"
    assert group["facets"] == [
        {"name": "noise-a", "path": "noise-a", "count": HOURS, "state": "displayed"}
    ]


async def test_v1_search_without_a_dataset_is_a_400(api: Api) -> None:
    response = await _get(api, "/api/records/1.0/search/", q="x")
    assert response.status_code == 400
    assert "dataset" in response.json()["message"]


async def test_cors_is_open_for_get_and_the_docs_are_served(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base) as client:
        response = await client.get(RECORDS, headers={"Origin": "https://example.org"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert "/api/explore/v2.1/catalog/datasets/{dataset_id}/records" in spec["paths"]


async def test_dcat_catalogue_is_served_by_the_stage(api: Api) -> None:
    response = await _get(api, "/api/explore/v2.1/catalog/exports/dcat")
    assert response.status_code == 200
    graph = rdflib.Graph().parse(data=response.text, format="turtle")
    dcat = rdflib.Namespace("http://www.w3.org/ns/dcat#")
    datasets = set(graph.subjects(rdflib.RDF.type, dcat.Dataset))
    assert len(datasets) == len(default_catalog(PublishSettings()))


async def test_a_client_over_the_rate_limit_gets_429_with_retry_after(api: Api) -> None:
    service = _service(api.db_url, rate_limit="3/minute")
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as client:
            statuses = [(await client.get(RECORDS)).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            limited = await client.get(RECORDS)
            assert limited.json()["error_code"] == "TooManyRequests"
            assert int(limited.headers["retry-after"]) >= 1
            assert (await client.get("/healthz")).status_code == 200  # probes are not limited
    finally:
        await service.stop()


_HOSTILE = [
    "'; DROP TABLE sites; --",
    '" or 1=1 --',
    ") or (1=1",
    "pg_sleep(10)",
    "laeq_db > 1; select * from sensors",
    "sensor_id in (select id from sensors)",
    "`sensors`.id",
    "pg_catalog.pg_user",
    "\x00",
    "é" * 50,
    "(" * 500,
    "count(*) as n",
    "date_format(start_time, 'yyyy')",
    "within_distance(geo_point_2d, geom'POINT(2.39 48.85)', 500m)",
    'search("nation")',
    "start_time >= date'2026-03-02' and not laeq_db is null",
    "range(laeq_db, 5)",
    "-1",
    "100000000000000000000",
    "Europe/Paris",
    "sensor_id:noise-a",
    "x" * 20_000,
]
_TOKENS = [
    *_HOSTILE,
    " ", ",", "(", ")", "'", '"', "=", ">", "<", "and", "or", "not", "in", "like", "is null",
    "laeq_db", "sensor_id", "start_time", "geo_point_2d", "avg(", "sum(", "1", "2.5", "*",
]  # fmt: skip
_PARAMS = [
    "select", "where", "group_by", "order_by", "limit", "offset", "refine", "exclude", "lang",
    "timezone",
]  # fmt: skip


async def test_random_and_hostile_parameters_are_never_a_server_error(api: Api) -> None:
    """Every parameter, random token soup and injection attempts: 2xx or 4xx, never 5xx. (That
    no statement reads another relation than the view is also enforced by the database: the
    API role can read the opendata views only; see test_query_fuzz and the role tests.)"""
    import random

    rng = random.Random(20261204)
    seen: dict[int, int] = {}
    paths = [RECORDS, f"{EXPORTS}/csv", "/api/records/1.0/search/"]
    async with httpx.AsyncClient(base_url=api.base, timeout=60) as client:
        for case in range(400):
            params: dict[str, str] = {}
            for name in rng.sample(_PARAMS, rng.randint(1, 4)):
                if rng.random() < 0.4:
                    params[name] = rng.choice(_HOSTILE)
                else:
                    params[name] = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 8)))
            path = paths[case % len(paths)]
            if path.startswith("/api/records"):
                params = {
                    "dataset": "bruit-horaire",
                    "q": params.get("where", ""),
                    **{f"refine.{k}": v for k, v in params.items() if k in ("refine", "exclude")},
                    "sort": params.get("order_by", ""),
                    "rows": params.get("limit", "10"),
                }
            response = await client.get(path, params=params)
            assert response.status_code < 500, (path, params, response.text[:300])
            seen[response.status_code // 100] = seen.get(response.status_code // 100, 0) + 1
            if response.status_code >= 400:
                assert response.json()["error_code"], (path, params)
    # Both kinds happened: valid random queries ran, invalid ones were refused.
    assert seen.get(2, 0) > 20, seen
    assert seen.get(4, 0) > 20, seen


@pytest.mark.parametrize(("limit", "offset"), [(100, 0), (100, 5900), (100, 5950), (50, 9000)])
async def test_total_count_is_exact_on_every_page(api: Api, limit: int, offset: int) -> None:
    """First page, a full page, the short last page, past the end: the same total (the API
    takes it from a short page or counts; the filtered count is never cached)."""
    where = 'sensor_id = "noise-a" or sensor_id = "noise-b"'
    for params in ({}, {"where": where}):
        body = (await _get(api, RECORDS, limit=limit, offset=offset, **params)).json()
        assert body["total_count"] == len(SENSORS) * HOURS
        assert len(body["results"]) == max(0, min(limit, len(SENSORS) * HOURS - offset))
