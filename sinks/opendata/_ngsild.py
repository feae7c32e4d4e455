"""NGSI-LD entities (FIWARE Smart Data Models) built from the published datasets' rows.

Context brokers and digital-twin platforms read city sensors as NGSI-LD entities (ETSI GS CIM
009, the NGSI-LD API; the attribute names and meanings are the Smart Data Models'). Each entity
is the current state of one sensor, site or (site, mode): the newest row of a dataset view, so an
entity id is stable while its values move, as in a context broker.

Representation (ETSI GS CIM 009 clause 4.5): an attribute is ``{"type": "Property", "value": …}``
(``observedAt`` the time the value was observed, ``unitCode`` a UN/CEFACT common code), a
``GeoProperty`` for ``location`` (a GeoJSON Point ``[lon, lat]``) or a ``Relationship`` with an
``object`` URI; date-time values are ``{"@type": "DateTime", "@value": …}``. Ids are URNs
``urn:ngsi-ld:<Type>:<id>``. :func:`key_values` gives the simplified (key-values) form.

The Smart Data Models used (attributes from each model's ``schema.json``):

* ``NoiseLevelObserved`` (dataModel.Environment) from ``opendata.noise_hourly``: the sensor's
  newest hourly window, ``dateObservedFrom``/``dateObservedTo`` and ``dateObserved`` as the ISO
  8601 interval, ``LAeq``/``LAmax`` in dB (``2N``), ``refDevice``.
* ``AirQualityObserved`` (dataModel.Environment) from ``opendata.air_hourly``: hourly means in
  µg/m³ (``GQ``), ``airQualityIndex``/``airQualityLevel`` the European Air Quality Index band and
  label. ``dateObserved`` is the end of the hour, the time the mean is known (the EEA's
  up-to-date air quality data are time-stamped at the end of the averaging period).
* ``ItemFlowObserved`` (dataModel.Transportation) from ``opendata.counts_hourly``: one entity per
  site and traffic class, ``intensity`` the count of the newest hour, ``itemType`` ``people`` for
  pedestrians and ``vehicle`` for the other classes, ``itemSubType`` the class. ``laneId`` is
  required by the model but absent: a site's hourly count sums all its counting lines.
* ``PointOfInterest`` (dataModel.PointOfInterest; the models have no swimming-pool entity) from
  ``opendata.pool_now``: ``capacity`` and ``occupancy`` (people inside, observed at the end of
  the newest 1-minute window).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "CORE_CONTEXT",
    "ENTITY_TYPES",
    "EntitySource",
    "EntityType",
    "entity_id",
    "id_key",
    "key_values",
    "problem_details",
]

#: The NGSI-LD core @context (ETSI GS CIM 009); it goes last in an @context array.
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
_SDM = "https://raw.githubusercontent.com/smart-data-models/{}/master/context.jsonld"
ENVIRONMENT_CONTEXT = _SDM.format("dataModel.Environment")
TRANSPORTATION_CONTEXT = _SDM.format("dataModel.Transportation")
POINT_OF_INTEREST_CONTEXT = _SDM.format("dataModel.PointOfInterest")

#: UN/CEFACT common codes (Recommendation 20): decibel, microgram per cubic metre.
_DECIBEL = "2N"
_MICROGRAM_PER_M3 = "GQ"

_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"

Row = Mapping[str, Any]
Entity = dict[str, Any]


@dataclass(frozen=True, slots=True)
class EntitySource:
    """Where an entity's data comes from, for the GSMA-Commons ``dataProvider`` and ``source``."""

    data_provider: str
    #: The dataset's metadata URL in the publication API.
    source: str


@dataclass(frozen=True, slots=True)
class EntityType:
    """One entity type: the view it is read from and how a row becomes an entity."""

    name: str
    #: The view in the ``opendata`` schema (a dataset of the catalogue must be over it).
    view: str
    #: Columns identifying the entity; the id's last part joins their values with ``:``.
    key_columns: tuple[str, ...]
    #: The column whose newest value per key is the entity's current state.
    time_column: str
    #: The Smart Data Models @context defining the attribute names.
    context: str
    build: Callable[[Row, EntitySource], Entity]


def entity_id(type_name: str, key: Sequence[str]) -> str:
    """``urn:ngsi-ld:<Type>:<key parts joined by ':'>``; parts are percent-encoded (RFC 3986
    unreserved characters kept) so the id stays a URN whatever a sensor id holds."""
    return f"urn:ngsi-ld:{type_name}:" + ":".join(quote(str(k), safe="-._~") for k in key)


def id_key(value: str) -> tuple[str, tuple[str, ...]] | None:
    """The (type, key parts) an entity id names, or None when it is not one of ours."""
    parts = value.split(":")
    if len(parts) < 4 or parts[0] != "urn" or parts[1] != "ngsi-ld" or not parts[2]:
        return None
    return parts[2], tuple(unquote(p) for p in parts[3:])


def _utc(value: datetime) -> str:
    """ISO 8601 in UTC with ``Z``, the form NGSI-LD and the Smart Data Models examples use."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _datetime(value: datetime) -> dict[str, str]:
    return {"@type": "DateTime", "@value": _utc(value)}


def _property(
    value: Any, *, observed_at: datetime | None = None, unit_code: str | None = None
) -> dict[str, Any]:
    attribute: dict[str, Any] = {"type": "Property", "value": value}
    if observed_at is not None:
        attribute["observedAt"] = _utc(observed_at)
    if unit_code is not None:
        attribute["unitCode"] = unit_code
    return attribute


def _common(type_name: str, key: Sequence[str], row: Row, source: EntitySource) -> Entity:
    """id, type, name, location and the GSMA-Commons provenance of any entity."""
    entity: Entity = {"id": entity_id(type_name, key), "type": type_name}
    name = row.get("site_name")
    if name:
        entity["name"] = _property(name)
    point = row.get("geo_point_2d")
    if point is not None:
        entity["location"] = {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [point["lon"], point["lat"]]},
        }
    entity["dataProvider"] = _property(source.data_provider)
    entity["source"] = _property(source.source)
    return entity


def _set_measures(
    entity: Entity, row: Row, columns: Mapping[str, str], observed_at: datetime, unit: str
) -> None:
    """Attributes from the row's non-null measures (a null is no measurement, not a zero)."""
    for attribute, column in columns.items():
        value = row.get(column)
        if value is not None:
            entity[attribute] = _property(value, observed_at=observed_at, unit_code=unit)


def noise_level_observed(row: Row, source: EntitySource) -> Entity:
    """A ``NoiseLevelObserved`` from an ``opendata.noise_hourly`` row."""
    start, end = row["start_time"], row["end_time"]
    entity = _common("NoiseLevelObserved", (row["sensor_id"],), row, source)
    entity["dateObserved"] = _property(f"{_utc(start)}/{_utc(end)}")
    entity["dateObservedFrom"] = _property(_datetime(start))
    entity["dateObservedTo"] = _property(_datetime(end))
    _set_measures(entity, row, {"LAeq": "laeq_db", "LAmax": "lamax_db"}, end, _DECIBEL)
    entity["refDevice"] = {
        "type": "Relationship",
        "object": entity_id("Device", (row["sensor_id"],)),
    }
    return entity


_POLLUTANTS = {
    "pm25": "pm2_5_ugm3",
    "pm10": "pm10_ugm3",
    "no2": "no2_ugm3",
    "o3": "o3_ugm3",
    "so2": "so2_ugm3",
}


def air_quality_observed(row: Row, source: EntitySource) -> Entity:
    """An ``AirQualityObserved`` from an ``opendata.air_hourly`` row."""
    end = row["end_time"]
    entity = _common("AirQualityObserved", (row["sensor_id"],), row, source)
    entity["dateObserved"] = _property(_datetime(end))
    _set_measures(entity, row, _POLLUTANTS, end, _MICROGRAM_PER_M3)
    if row.get("eaqi_band") is not None:
        entity["airQualityIndex"] = _property(row["eaqi_band"], observed_at=end)
    if row.get("eaqi_label"):
        entity["airQualityLevel"] = _property(row["eaqi_label"], observed_at=end)
    entity["refDevice"] = {
        "type": "Relationship",
        "object": entity_id("Device", (row["sensor_id"],)),
    }
    return entity


#: Traffic classes (decoders.TRAFFIC_CLASSES) as the model's ``itemType`` enumeration
#: (people, ship, vehicle, yacht); ``unknown`` could be either, so it has no itemType.
_ITEM_TYPES = {
    "pedestrian": "people",
    "bicycle": "vehicle",
    "two_wheeler": "vehicle",
    "car": "vehicle",
    "bus": "vehicle",
    "truck": "vehicle",
}


def item_flow_observed(row: Row, source: EntitySource) -> Entity:
    """An ``ItemFlowObserved`` from an ``opendata.counts_hourly`` row (one site, one mode)."""
    start, end = row["start_time"], row["end_time"]
    mode = row["mode"]
    entity = _common("ItemFlowObserved", (row["site_id"], mode), row, source)
    entity["dateObserved"] = _property(_datetime(end))
    entity["dateObservedFrom"] = _property(_datetime(start))
    entity["dateObservedTo"] = _property(_datetime(end))
    if mode in _ITEM_TYPES:
        entity["itemType"] = _property(_ITEM_TYPES[mode])
    entity["itemSubType"] = _property(mode)
    if row.get("count") is not None:
        entity["intensity"] = _property(row["count"], observed_at=end)
    return entity


def pool_point_of_interest(row: Row, source: EntitySource) -> Entity:
    """A ``PointOfInterest`` from an ``opendata.pool_now`` row: the pool and its occupancy."""
    observed_at = row["observed_at"]
    entity = _common("PointOfInterest", (row["site_id"],), row, source)
    if "name" not in entity:
        # The model requires a name; a site missing from the registry is named by its id.
        entity["name"] = _property(row["site_id"])
    if row.get("capacity") is not None:
        entity["capacity"] = _property(row["capacity"])
    if row.get("people") is not None:
        entity["occupancy"] = _property(row["people"], observed_at=observed_at)
    return entity


ENTITY_TYPES: dict[str, EntityType] = {
    t.name: t
    for t in (
        EntityType(
            "NoiseLevelObserved",
            "noise_hourly",
            ("sensor_id",),
            "start_time",
            ENVIRONMENT_CONTEXT,
            noise_level_observed,
        ),
        EntityType(
            "AirQualityObserved",
            "air_hourly",
            ("sensor_id",),
            "start_time",
            ENVIRONMENT_CONTEXT,
            air_quality_observed,
        ),
        EntityType(
            "ItemFlowObserved",
            "counts_hourly",
            ("site_id", "mode"),
            "start_time",
            TRANSPORTATION_CONTEXT,
            item_flow_observed,
        ),
        EntityType(
            "PointOfInterest",
            "pool_now",
            ("site_id",),
            "observed_at",
            POINT_OF_INTEREST_CONTEXT,
            pool_point_of_interest,
        ),
    )
}


def key_values(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The simplified (key-values) representation (ETSI GS CIM 009 clause 4.5.4): each
    Property as its value, a Relationship as its object, a GeoProperty as its GeoJSON; typed
    values (``{"@type": "DateTime", "@value": …}``) as their lexical value."""
    simplified: dict[str, Any] = {}
    for name, attribute in entity.items():
        if not isinstance(attribute, Mapping) or "type" not in attribute:
            simplified[name] = attribute
        elif attribute["type"] == "Relationship":
            simplified[name] = attribute["object"]
        else:
            value = attribute["value"]
            if isinstance(value, Mapping) and "@value" in value:
                value = value["@value"]
            simplified[name] = value
    return simplified


def problem_details(error_type: str, title: str, detail: str) -> dict[str, str]:
    """An NGSI-LD error body (ProblemDetails, RFC 7807; types from ETSI GS CIM 009 clause
    5.5.2, e.g. ``BadRequestData``)."""
    return {"type": _ERRORS + error_type, "title": title, "detail": detail}
