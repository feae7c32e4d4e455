"""Values as the portal writes them: JSON for the records API, text for CSV, Arrow for Parquet.

OpenDataSoft's conventions, which reusers' code expects:

- ``datetime`` fields are ISO 8601 with the offset of the request's ``timezone`` (UTC by
  default): ``2026-01-01T10:00:00+01:00``; ``date`` fields are ``YYYY-MM-DD``;
- ``geo_point_2d`` is ``{"lon": 2.39, "lat": 48.85}`` in JSON and ``48.85, 2.39`` (latitude
  first) in CSV;
- ``geo_shape`` is a GeoJSON Feature in JSON (``{"type": "Feature", "geometry": {...},
  "properties": {}}``) and its geometry's GeoJSON text in CSV and Parquet (RFC 7946);
- CSV exports use ``;`` as the separator, a header row of field names, an empty cell for null;
- booleans are JSON booleans, and ``True``/``False`` in CSV.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any

import pyarrow as pa

from sinks.opendata._catalog import FieldType

__all__ = ["arrow_schema", "csv_value", "json_rows", "json_value", "shape_geometry"]


def json_value(value: Any, field_type: FieldType, tz: tzinfo) -> Any:
    """``value`` from the database as the records API returns it."""
    if value is None:
        return None
    if field_type == "datetime" and isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def _json_converter(field_type: FieldType, tz: tzinfo) -> Callable[[Any], Any]:
    """:func:`json_value` for one column, with the common types answered before its chain of
    ``isinstance`` checks (the records endpoint converts every value of every page)."""
    if field_type == "datetime":

        def stamp(value: Any) -> Any:
            if type(value) is datetime:
                return value.astimezone(tz).isoformat()
            return json_value(value, field_type, tz)

        return stamp

    def other(value: Any) -> Any:
        kind = type(value)
        if value is None or kind is str or kind is int or kind is bool or kind is dict:
            return value
        if kind is float:
            return value if math.isfinite(value) else None
        return json_value(value, field_type, tz)

    return other


def json_rows(
    rows: Sequence[Sequence[Any]], columns: Sequence[tuple[str, FieldType]], tz: tzinfo
) -> list[dict[str, Any]]:
    """``rows`` as the records API returns them: one object per row, :func:`json_value` for
    each value."""
    names = [name for name, _ in columns]
    converters = [_json_converter(kind, tz) for _, kind in columns]
    return [
        dict(zip(names, [f(v) for f, v in zip(converters, row, strict=True)], strict=True))
        for row in rows
    ]


def csv_value(value: Any, field_type: FieldType, tz: tzinfo) -> str:
    """``value`` as one CSV cell."""
    if value is None:
        return ""
    if field_type == "geo_point_2d" and isinstance(value, dict):
        return f"{value.get('lat')}, {value.get('lon')}"
    if field_type == "geo_shape":
        return _geometry_text(value)
    if isinstance(value, bool):
        return "True" if value else "False"
    converted = json_value(value, field_type, tz)
    if converted is None:
        return ""
    if isinstance(converted, dict | list):
        import orjson

        return orjson.dumps(converted).decode()
    return str(converted)


_ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "int": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "geo_point_2d": pa.struct([("lon", pa.float64()), ("lat", pa.float64())]),
    "geo_shape": pa.string(),
}


def shape_geometry(value: Any) -> dict[str, Any] | None:
    """The GeoJSON geometry of a ``geo_shape`` value (a Feature, or a bare geometry)."""
    if not isinstance(value, dict):
        return None
    if value.get("type") == "Feature":
        geometry = value.get("geometry")
        return geometry if isinstance(geometry, dict) else None
    return value


def _geometry_text(value: Any) -> str:
    import orjson

    geometry = shape_geometry(value)
    return "" if geometry is None else orjson.dumps(geometry).decode()


def arrow_schema(columns: Sequence[tuple[str, FieldType]]) -> pa.Schema:
    """The Parquet schema of an export: datetimes as UTC microsecond timestamps, points as
    ``struct<lon, lat>`` (what GeoParquet readers expect before a geometry column exists),
    shapes as their geometry's GeoJSON text."""
    fields = []
    for name, field_type in columns:
        arrow_type = (
            pa.timestamp("us", tz="UTC") if field_type == "datetime" else _ARROW_TYPES[field_type]
        )
        fields.append(pa.field(name, arrow_type))
    return pa.schema(fields)


def arrow_value(value: Any, field_type: FieldType) -> Any:
    """``value`` as pyarrow accepts it for the column type of :func:`arrow_schema`."""
    if value is None:
        return None
    if field_type == "geo_shape":
        return _geometry_text(value) or None
    if isinstance(value, Decimal):
        return int(value) if field_type == "int" else float(value)
    if field_type == "int" and isinstance(value, float):
        return int(value)
    if field_type == "double" and isinstance(value, int):
        return float(value)
    return value
