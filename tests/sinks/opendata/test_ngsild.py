"""NGSI-LD entities: built from dataset rows, valid against the real Smart Data Models schemas
(vendored in smart_data_models/, resolved offline), and served by ``GET /ngsi-ld/v1/entities``
over views in a scratch database read by a role that may read nothing but those views."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx
import jsonschema  # no stubs installed (types-jsonschema)
import psycopg
import pytest
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from referencing import Registry, Resource

from citysense.settings import PublishSettings, Settings
from sinks.opendata._catalog import Catalog, Dataset, DatasetField, FieldType, LocalizedText
from sinks.opendata._ngsild import (
    CORE_CONTEXT,
    ENTITY_TYPES,
    EntitySource,
    air_quality_observed,
    entity_id,
    id_key,
    item_flow_observed,
    key_values,
    noise_level_observed,
    pool_point_of_interest,
)
from sinks.opendata._routes_linked import CURRENT_WITHIN, negotiate, router
from sinks.opendata._state import Publication
from tests.sinks._helpers import fresh_database

_MODELS = Path(__file__).parent / "smart_data_models"
_PARIS = ZoneInfo("Europe/Paris")
_SOURCE = EntitySource(data_provider="Ville de Test", source="http://opendata.test/x")
PUBLIC_URL = "http://opendata.test"

# --- offline Smart Data Models schemas ---------------------------------------------------------

#: Where each vendored file is published: the URLs the schemas' $ref use.
_PUBLISHED_AT = {
    "data-models/common-schema.json": (
        "https://smart-data-models.github.io/data-models/common-schema.json",
    ),
    "dataModel.Environment/Environment-schema.json": (
        "https://smart-data-models.github.io/dataModel.Environment/Environment-schema.json",
        "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/"
        "Environment-schema.json",
    ),
}
_SCHEMAS = {
    "NoiseLevelObserved": "dataModel.Environment/NoiseLevelObserved/schema.json",
    "AirQualityObserved": "dataModel.Environment/AirQualityObserved/schema.json",
    "ItemFlowObserved": "dataModel.Transportation/ItemFlowObserved/schema.json",
    "PointOfInterest": "dataModel.PointOfInterest/PointOfInterest/schema.json",
}
_CONTEXTS = {
    "NoiseLevelObserved": "dataModel.Environment/context.jsonld",
    "AirQualityObserved": "dataModel.Environment/context.jsonld",
    "ItemFlowObserved": "dataModel.Transportation/context.jsonld",
    "PointOfInterest": "dataModel.PointOfInterest/context.jsonld",
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _load(path: str) -> Any:
    return json.loads((_MODELS / path).read_text(encoding="utf-8"))


def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry()
    for path, urls in _PUBLISHED_AT.items():
        resource = Resource.from_contents(_load(path))
        registry = registry.with_resources((url, resource) for url in urls)
    return registry


def _format_checker() -> jsonschema.FormatChecker:
    """The draft 2020-12 checker plus ``date-time`` (RFC 3339 section 5.6) and ``uri``, which
    jsonschema checks only with optional packages this project does not install."""
    checker = jsonschema.FormatChecker()

    def date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.match(value):
            return False
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        return True

    def uri(value: object) -> bool:
        return not isinstance(value, str) or bool(urlsplit(value).scheme)

    checker.checks("date-time", raises=ValueError)(date_time)
    checker.checks("uri")(uri)
    return checker


_REGISTRY = _registry()
_CHECKER = _format_checker()


def schema_errors(entity: dict[str, Any]) -> list[str]:
    """The validation errors of an entity's key-values form against its model's schema."""
    schema = _load(_SCHEMAS[entity["type"]])
    validator = jsonschema.Draft202012Validator(schema, registry=_REGISTRY, format_checker=_CHECKER)
    simplified = {k: v for k, v in key_values(entity).items() if k != "@context"}
    return sorted(error.message for error in validator.iter_errors(simplified))


# --- rows as the views give them ---------------------------------------------------------------

_START = datetime(2026, 7, 14, 10, 0, tzinfo=_PARIS)  # 08:00 UTC (CEST, UTC+2)
_END = _START + timedelta(hours=1)


def noise_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "sensor_id": "nl-12",
        "site_id": "place-carnot",
        "site_name": "Place Carnot",
        "start_time": _START,
        "end_time": _END,
        "laeq_db": 61.3,
        "lamax_db": 88.1,
        "l10_db": 64.0,
        "l50_db": 59.5,
        "l90_db": 52.25,
        "coverage": 0.98,
        "sample_count": 3528,
        "geo_point_2d": {"lon": 4.8357, "lat": 45.764},
    }
    return row | overrides


def air_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "sensor_id": "aq-3",
        "site_id": "gare",
        "site_name": "Gare",
        "start_time": _START,
        "end_time": _END,
        "pm2_5_ugm3": 12.5,
        "pm10_ugm3": 21.0,
        "no2_ugm3": 48.0,
        "o3_ugm3": 70.25,
        "so2_ugm3": None,
        "eaqi_band": 3,
        "eaqi_label": "Moderate",
        "geo_point_2d": {"lon": 4.8256, "lat": 45.7485},
    }
    return row | overrides


def counts_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "site_id": "pont-wilson",
        "site_name": "Pont Wilson",
        "start_time": _START,
        "end_time": _END,
        "mode": "bicycle",
        "count": 143,
        "geo_point_2d": {"lon": 4.8399, "lat": 45.7588},
    }
    return row | overrides


def pool_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "site_id": "piscine-nord",
        "site_name": "Piscine du Nord",
        "observed_at": datetime(2026, 7, 14, 15, 31, tzinfo=UTC),
        "people": 87,
        "capacity": 250,
        "occupancy_pct": 34.8,
        "affluence": 2,
        "geo_point_2d": {"lon": 4.85, "lat": 45.78},
    }
    return row | overrides


# --- pure builders -----------------------------------------------------------------------------


def test_noise_level_observed_is_the_hourly_window_in_utc_with_levels_in_decibels() -> None:
    entity = noise_level_observed(noise_row(), _SOURCE)
    assert entity["id"] == "urn:ngsi-ld:NoiseLevelObserved:nl-12"
    # 10:00 in Paris on 14 July is 08:00 UTC (summer time, UTC+2).
    assert entity["dateObservedFrom"]["value"] == {
        "@type": "DateTime",
        "@value": "2026-07-14T08:00:00Z",
    }
    assert entity["dateObservedTo"]["value"]["@value"] == "2026-07-14T09:00:00Z"
    assert entity["dateObserved"]["value"] == "2026-07-14T08:00:00Z/2026-07-14T09:00:00Z"
    assert entity["LAeq"] == {
        "type": "Property",
        "value": 61.3,
        "observedAt": "2026-07-14T09:00:00Z",
        "unitCode": "2N",
    }
    assert entity["LAmax"]["value"] == 88.1
    # GeoJSON (RFC 7946) orders a position longitude first.
    assert entity["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [4.8357, 45.764]},
    }
    assert entity["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:nl-12"}
    assert entity["name"]["value"] == "Place Carnot"
    assert entity["dataProvider"]["value"] == "Ville de Test"


def test_air_quality_observed_has_means_in_micrograms_and_the_eaqi_band() -> None:
    entity = air_quality_observed(air_row(), _SOURCE)
    assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:aq-3"
    assert entity["dateObserved"]["value"]["@value"] == "2026-07-14T09:00:00Z"
    assert entity["pm25"]["value"] == 12.5
    assert entity["o3"]["value"] == 70.25
    assert {entity[p]["unitCode"] for p in ("pm25", "pm10", "no2", "o3")} == {"GQ"}
    # No SO2 measurement that hour: no attribute, rather than a zero that was never measured.
    assert "so2" not in entity
    assert entity["airQualityIndex"]["value"] == 3
    assert entity["airQualityLevel"]["value"] == "Moderate"


@pytest.mark.parametrize(
    ("mode", "item_type"),
    [("pedestrian", "people"), ("bicycle", "vehicle"), ("truck", "vehicle"), ("unknown", None)],
)
def test_item_flow_observed_is_one_entity_per_site_and_mode(
    mode: str, item_type: str | None
) -> None:
    entity = item_flow_observed(counts_row(mode=mode, count=0), _SOURCE)
    assert entity["id"] == f"urn:ngsi-ld:ItemFlowObserved:pont-wilson:{mode}"
    assert entity.get("itemType", {}).get("value") == item_type
    assert entity["itemSubType"]["value"] == mode
    # Zero counted is a measurement, kept.
    assert entity["intensity"]["value"] == 0
    assert entity["dateObservedFrom"]["value"]["@value"] == "2026-07-14T08:00:00Z"


def test_a_pool_is_a_point_of_interest_with_its_capacity_and_occupancy() -> None:
    entity = pool_point_of_interest(pool_row(), _SOURCE)
    assert entity["id"] == "urn:ngsi-ld:PointOfInterest:piscine-nord"
    assert entity["capacity"]["value"] == 250
    assert entity["occupancy"] == {
        "type": "Property",
        "value": 87,
        "observedAt": "2026-07-14T15:31:00Z",
    }
    unnamed = pool_point_of_interest(pool_row(site_name=None), _SOURCE)
    assert unnamed["name"]["value"] == "piscine-nord"


def test_entity_ids_round_trip_and_stay_urns_whatever_the_id_holds() -> None:
    assert entity_id("PointOfInterest", ["a b:c/d"]) == "urn:ngsi-ld:PointOfInterest:a%20b%3Ac%2Fd"
    assert id_key("urn:ngsi-ld:PointOfInterest:a%20b%3Ac%2Fd") == ("PointOfInterest", ("a b:c/d",))
    assert id_key("urn:ngsi-ld:ItemFlowObserved:s:car") == ("ItemFlowObserved", ("s", "car"))
    assert id_key("urn:other:X:y") is None
    assert id_key("urn:ngsi-ld:X") is None


def test_key_values_is_the_simplified_representation() -> None:
    simplified = key_values(noise_level_observed(noise_row(), _SOURCE))
    assert simplified["dateObservedFrom"] == "2026-07-14T08:00:00Z"
    assert simplified["LAeq"] == 61.3
    assert simplified["refDevice"] == "urn:ngsi-ld:Device:nl-12"
    assert simplified["location"] == {"type": "Point", "coordinates": [4.8357, 45.764]}
    assert simplified["type"] == "NoiseLevelObserved"


# --- against the Smart Data Models --------------------------------------------------------------


def test_the_schema_check_catches_what_it_should() -> None:
    """The offline validation is live: broken entities fail it."""
    bad_time = noise_level_observed(noise_row(), _SOURCE)
    bad_time["dateObservedFrom"] = {"type": "Property", "value": "14/07/2026 10:00"}
    assert any("date-time" in e for e in schema_errors(bad_time))
    no_location = noise_level_observed(noise_row(geo_point_2d=None), _SOURCE)
    assert schema_errors(no_location) == ["'location' is a required property"]
    bad_index = air_quality_observed(air_row(eaqi_band=-1), _SOURCE)
    assert any("minimum" in e for e in schema_errors(bad_index))


@pytest.mark.parametrize(
    "entity",
    [
        noise_level_observed(noise_row(), _SOURCE),
        air_quality_observed(air_row(), _SOURCE),
        pool_point_of_interest(pool_row(), _SOURCE),
        pool_point_of_interest(pool_row(site_name=None, capacity=None, people=None), _SOURCE),
    ],
    ids=["noise", "air", "pool", "pool-sparse"],
)
def test_entities_validate_against_their_smart_data_model(entity: dict[str, Any]) -> None:
    assert schema_errors(entity) == []


@pytest.mark.parametrize("mode", ["pedestrian", "car", "unknown"])
def test_item_flow_observed_validates_except_for_the_lane_it_cannot_name(mode: str) -> None:
    """ItemFlowObserved requires ``laneId``; a site's hourly count sums all its counting lines,
    so there is no lane to name and that is the one error left."""
    entity = item_flow_observed(counts_row(mode=mode), _SOURCE)
    assert schema_errors(entity) == ["'laneId' is a required property"]


@pytest.mark.parametrize(
    "entity",
    [
        noise_level_observed(noise_row(), _SOURCE),
        air_quality_observed(air_row(so2_ugm3=4.0), _SOURCE),
        item_flow_observed(counts_row(), _SOURCE),
        pool_point_of_interest(pool_row(), _SOURCE),
    ],
    ids=["noise", "air", "flow", "pool"],
)
def test_every_attribute_is_a_term_of_the_types_context(entity: dict[str, Any]) -> None:
    """An attribute its @context does not define would expand to the core context's default
    vocabulary, not to the model's IRI; the served @context is the type's own."""
    terms = _load(_CONTEXTS[entity["type"]])["@context"]
    attributes = set(entity) - {"id", "type"}
    assert attributes - set(terms) == set()
    assert ENTITY_TYPES[entity["type"]].context.endswith(
        "/" + _CONTEXTS[entity["type"]].replace("/context.jsonld", "/master/context.jsonld")
    )


# --- content negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/ld+json", "application/ld+json"),
        ("application/json;q=0.5, application/ld+json", "application/ld+json"),
        ("application/*;q=0.9, application/json;q=0.1", "application/ld+json"),
        ("text/html, */*;q=0.8", "application/json"),
        ("text/html", None),
        ("application/ld+json;q=0", None),
    ],
)
def test_negotiate_follows_quality_then_specificity(accept: str | None, expected: str) -> None:
    assert negotiate(accept, ["application/json", "application/ld+json"]) == expected


# --- the route, over a scratch database ---------------------------------------------------------

_SCHEMA_SQL = """
CREATE SCHEMA base;
CREATE SCHEMA opendata;
CREATE TABLE base.noise (
    sensor_id text, site_id text, site_name text, start_time timestamptz, end_time timestamptz,
    laeq_db double precision, lamax_db double precision, l10_db double precision,
    l50_db double precision, l90_db double precision, coverage double precision,
    sample_count int, geo_point_2d jsonb);
CREATE TABLE base.air (
    sensor_id text, site_id text, site_name text, start_time timestamptz, end_time timestamptz,
    pm2_5_ugm3 double precision, pm10_ugm3 double precision, no2_ugm3 double precision,
    o3_ugm3 double precision, so2_ugm3 double precision, eaqi_band int, eaqi_label text,
    geo_point_2d jsonb);
CREATE TABLE base.counts (
    site_id text, site_name text, start_time timestamptz, end_time timestamptz, mode text,
    count int, geo_point_2d jsonb);
CREATE TABLE base.pool (
    site_id text, site_name text, observed_at timestamptz, people int, capacity int,
    occupancy_pct double precision, affluence int, geo_point_2d jsonb);
CREATE VIEW opendata.noise_hourly AS SELECT *, NULL::xid8 AS _change_txid,
    sensor_id || '|' || start_time AS _change_key FROM base.noise;
CREATE VIEW opendata.air_hourly AS SELECT *, NULL::xid8 AS _change_txid,
    sensor_id || '|' || start_time AS _change_key FROM base.air;
CREATE VIEW opendata.counts_hourly AS SELECT *, NULL::xid8 AS _change_txid,
    site_id || '|' || mode || '|' || start_time AS _change_key FROM base.counts;
CREATE VIEW opendata.pool_now AS SELECT *, NULL::xid8 AS _change_txid,
    site_id AS _change_key FROM base.pool;
"""

_GEO = {"lon": 4.83, "lat": 45.76}


def _text(value: str) -> LocalizedText:
    return LocalizedText(fr=value, en=value)


def _dataset(dataset_id: str, view: str, fields: dict[str, FieldType]) -> Dataset:
    return Dataset(
        id=dataset_id,
        view=view,
        title=_text(dataset_id),
        description=_text(dataset_id),
        fields=tuple(DatasetField(name=n, type=t, label=_text(n)) for n, t in fields.items()),
        geo_field="geo_point_2d",
    )


def scratch_catalog(*, without: str | None = None) -> Catalog:
    """The four datasets the entities read, with just the fields that matter here."""
    geo: dict[str, FieldType] = {"site_id": "text", "geo_point_2d": "geo_point_2d"}
    datasets = [
        _dataset("bruit-horaire", "noise_hourly", geo),
        _dataset("qualite-air-horaire", "air_hourly", geo),
        _dataset("comptage-horaire-par-mode", "counts_hourly", geo),
        _dataset("affluence-piscine-temps-reel", "pool_now", geo),
    ]
    return Catalog(d for d in datasets if d.view != without)


@dataclass
class Api:
    client: httpx.AsyncClient
    hour: datetime

    async def get(self, query: str, accept: str | None = None) -> httpx.Response:
        headers = {} if accept is None else {"Accept": accept}
        return await self.client.get(f"/ngsi-ld/v1/entities?{query}", headers=headers)


async def _fill(conn: psycopg.AsyncConnection[Any], hour: datetime) -> None:
    geo = json.dumps(_GEO)

    def h(n: float) -> datetime:
        return hour - timedelta(hours=n)

    noise = [
        ("s1", h(3), 50.0),
        ("s1", h(2), 52.0),
        ("s1", h(1), 54.0),
        ("s2", h(2), 60.0),
        # Silent for longer than CURRENT_WITHIN: not a current observation.
        ("s9", h(CURRENT_WITHIN.total_seconds() / 3600 + 3), 70.0),
    ]
    for sensor, start, laeq in noise:
        await conn.execute(
            "INSERT INTO base.noise (sensor_id, site_id, site_name, start_time, end_time,"
            " laeq_db, lamax_db, geo_point_2d) VALUES (%s, 'site', 'Site', %s, %s, %s, %s, %s)",
            (sensor, start, start + timedelta(hours=1), laeq, laeq + 20, geo),
        )
    labels = {1: "Good", 3: "Moderate"}
    for sensor, start, pm25, band in (("a1", h(2), 30.0, 3), ("a1", h(1), 8.0, 1)):
        await conn.execute(
            "INSERT INTO base.air (sensor_id, site_id, site_name, start_time, end_time,"
            " pm2_5_ugm3, eaqi_band, eaqi_label, geo_point_2d)"
            " VALUES (%s, 'site', 'Site', %s, %s, %s, %s, %s, %s)",
            (sensor, start, start + timedelta(hours=1), pm25, band, labels[band], geo),
        )
    for mode, start, count in (("car", h(2), 40), ("car", h(1), 35), ("pedestrian", h(1), 0)):
        await conn.execute(
            "INSERT INTO base.counts VALUES ('pont', 'Pont', %s, %s, %s, %s, %s)",
            (start, start + timedelta(hours=1), mode, count, geo),
        )
    await conn.execute(
        "INSERT INTO base.pool VALUES ('piscine', 'Piscine', %s, 42, 200, 21.0, 1, %s)",
        (h(0.25), geo),
    )


@contextlib.asynccontextmanager
async def _api(settings: Settings, catalog: Catalog) -> AsyncIterator[Api]:
    """The router in a bare app, over a scratch database read by a role that may read the
    ``opendata`` views and nothing else (as the API role)."""
    role = f"api_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    admin_url = settings.database.url.get_secret_value()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        async with fresh_database(settings) as db:
            url = db.database.url.get_secret_value()
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(_SCHEMA_SQL)
                await _fill(conn, hour)
                await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
                await conn.execute(f"GRANT USAGE ON SCHEMA opendata TO {role}")
                await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA opendata TO {role}")
            parts = urlsplit(url)
            host = parts.netloc.rsplit("@", 1)[-1]
            role_url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
            async with AsyncConnectionPool(role_url, min_size=1, max_size=2, open=False) as pool:
                app = FastAPI()
                app.include_router(router)
                app.state.publication = Publication(
                    settings=PublishSettings(publisher="Ville de Test"),
                    catalog=catalog,
                    pool=pool,
                    public_url=PUBLIC_URL,
                )
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    yield Api(client, hour)
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with _api(settings, scratch_catalog()) as served:
        yield served


def _z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.integration
async def test_the_newest_hour_of_each_current_sensor_is_its_entity(api: Api) -> None:
    response = await api.get("type=NoiseLevelObserved")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    context = ENTITY_TYPES["NoiseLevelObserved"].context
    assert response.headers["link"] == (
        f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    )
    body = response.json()
    assert [e["id"] for e in body] == [
        "urn:ngsi-ld:NoiseLevelObserved:s1",
        "urn:ngsi-ld:NoiseLevelObserved:s2",
    ]
    s1, s2 = body
    assert s1["LAeq"]["value"] == 54.0
    assert s1["dateObservedFrom"]["value"]["@value"] == _z(api.hour - timedelta(hours=1))
    assert s1["dateObservedTo"]["value"]["@value"] == _z(api.hour)
    assert s2["LAmax"]["value"] == 80.0
    assert s1["source"]["value"] == f"{PUBLIC_URL}/api/explore/v2.1/catalog/datasets/bruit-horaire"
    assert all("@context" not in e for e in body)
    assert all(schema_errors(e) == [] for e in body)


@pytest.mark.integration
async def test_json_ld_carries_each_entitys_context(api: Api) -> None:
    response = await api.get("type=AirQualityObserved", accept="application/ld+json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ld+json"
    assert "link" not in response.headers
    (entity,) = response.json()
    assert entity["@context"] == [ENTITY_TYPES["AirQualityObserved"].context, CORE_CONTEXT]
    assert entity["pm25"]["value"] == 8.0
    assert entity["airQualityIndex"]["value"] == 1
    assert entity["airQualityLevel"]["value"] == "Good"
    assert schema_errors(entity) == []


@pytest.mark.integration
async def test_flows_per_site_and_mode_and_pools(api: Api) -> None:
    flows = (await api.get("type=ItemFlowObserved&options=keyValues")).json()
    assert [(f["id"], f["intensity"]) for f in flows] == [
        ("urn:ngsi-ld:ItemFlowObserved:pont:car", 35),
        ("urn:ngsi-ld:ItemFlowObserved:pont:pedestrian", 0),
    ]
    assert [f["itemType"] for f in flows] == ["vehicle", "people"]
    (pool,) = (await api.get("type=PointOfInterest&format=simplified")).json()
    assert pool["occupancy"] == 42
    assert pool["capacity"] == 200
    assert pool["location"] == {"type": "Point", "coordinates": [_GEO["lon"], _GEO["lat"]]}


@pytest.mark.integration
async def test_ids_limit_offset_and_count(api: Api) -> None:
    one = await api.get("type=NoiseLevelObserved&id=urn:ngsi-ld:NoiseLevelObserved:s2")
    assert [e["id"] for e in one.json()] == ["urn:ngsi-ld:NoiseLevelObserved:s2"]
    by_id = await api.get(
        "id=urn:ngsi-ld:ItemFlowObserved:pont:pedestrian,urn:ngsi-ld:ItemFlowObserved:x:car"
    )
    assert [e["id"] for e in by_id.json()] == ["urn:ngsi-ld:ItemFlowObserved:pont:pedestrian"]
    page = await api.get("type=NoiseLevelObserved&limit=1&offset=1&count=true")
    assert [e["id"] for e in page.json()] == ["urn:ngsi-ld:NoiseLevelObserved:s2"]
    assert page.headers["ngsild-results-count"] == "2"
    counted = await api.get("type=NoiseLevelObserved&limit=0&count=true")
    assert counted.json() == []
    assert counted.headers["ngsild-results-count"] == "2"


@pytest.mark.integration
async def test_several_types_page_across_types_in_json_ld(api: Api) -> None:
    types = "type=NoiseLevelObserved,ItemFlowObserved,PointOfInterest"
    everything = (await api.get(f"{types}&count=true", accept="application/ld+json")).json()
    ids = [e["id"].split(":")[2] for e in everything]
    assert ids == ["NoiseLevelObserved"] * 2 + ["ItemFlowObserved"] * 2 + ["PointOfInterest"]
    middle = await api.get(f"{types}&offset=1&limit=3&count=true", accept="application/ld+json")
    assert [e["id"] for e in middle.json()] == [e["id"] for e in everything[1:4]]
    assert middle.headers["ngsild-results-count"] == "5"
    # Environment and Transportation define dateObservedFrom differently: one Link cannot do.
    mixed = await api.get(types)
    assert mixed.status_code == 400
    assert "application/ld+json" in mixed.json()["detail"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "accept", "status", "error", "mentions"),
    [
        ("type=WeatherObserved", None, 400, "BadRequestData", "WeatherObserved"),
        ("", None, 400, "BadRequestData", "type"),
        ("type=NoiseLevelObserved&limit=abc", None, 400, "BadRequestData", "limit"),
        ("type=NoiseLevelObserved&limit=1001", None, 400, "BadRequestData", "1000"),
        ("type=NoiseLevelObserved&offset=-1", None, 400, "BadRequestData", "offset"),
        ("type=NoiseLevelObserved&limit=0", None, 400, "BadRequestData", "count=true"),
        ("type=NoiseLevelObserved&count=yes", None, 400, "BadRequestData", "count"),
        ("type=NoiseLevelObserved&q=LAeq>50", None, 400, "BadRequestData", "q"),
        ("type=NoiseLevelObserved&options=concise", None, 400, "BadRequestData", "concise"),
        ("id=not-an-urn", None, 400, "BadRequestData", "not-an-urn"),
        ("id=urn:ngsi-ld:Vehicle:1", None, 400, "BadRequestData", "Vehicle"),
        ("type=NoiseLevelObserved", "text/html", 406, "InvalidRequest", "application/json"),
    ],
)
async def test_bad_queries_get_problem_details(
    api: Api, query: str, accept: str | None, status: int, error: str, mentions: str
) -> None:
    response = await api.get(query, accept=accept)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == f"https://uri.etsi.org/ngsi-ld/errors/{error}"
    assert body["title"]
    assert mentions in body["detail"]


@pytest.mark.integration
async def test_a_type_whose_dataset_is_not_published_is_unknown(settings: Settings) -> None:
    async with _api(settings, scratch_catalog(without="pool_now")) as api:
        response = await api.get("type=PointOfInterest")
        assert response.status_code == 400
        assert "PointOfInterest" in response.json()["detail"]
        assert (await api.get("type=NoiseLevelObserved")).status_code == 200


@pytest.mark.integration
async def test_retrieve_one_entity_by_its_id(api: Api) -> None:
    path = "/ngsi-ld/v1/entities/urn:ngsi-ld:ItemFlowObserved:pont:car"
    response = await api.client.get(path, headers={"Accept": "application/ld+json"})
    assert response.status_code == 200
    entity = response.json()
    assert entity["id"] == "urn:ngsi-ld:ItemFlowObserved:pont:car"
    assert entity["intensity"]["value"] == 35
    assert entity["@context"] == [ENTITY_TYPES["ItemFlowObserved"].context, CORE_CONTEXT]
    simplified = await api.client.get(
        "/ngsi-ld/v1/entities/urn:ngsi-ld:NoiseLevelObserved:s1?options=keyValues&type=Other"
    )
    assert simplified.json()["LAeq"] == 54.0
    assert simplified.headers["link"].startswith(f"<{ENTITY_TYPES['NoiseLevelObserved'].context}>")
    for missing in ("urn:ngsi-ld:NoiseLevelObserved:s9", "urn:ngsi-ld:Vehicle:1"):
        gone = await api.client.get(f"/ngsi-ld/v1/entities/{missing}")
        assert gone.status_code == 404
        assert gone.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    bad = await api.client.get("/ngsi-ld/v1/entities/s1")
    assert bad.status_code == 400
    assert bad.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
