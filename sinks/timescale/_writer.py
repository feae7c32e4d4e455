"""The write path: Avro records → table rows (pure) and one batch → one transaction (SQL).

Row building is pure and works on the records as :func:`decode_record` returns them (no
intermediate :class:`schemas.Measurement`: this is the sink's hot path): :func:`schemas.decode`'s
records, but with every ``timestamp-micros`` field as an int of microseconds since 2000-01-01
UTC, PostgreSQL's epoch, instead of an aware ``datetime``. That is the binary wire format of
``timestamptz`` (PostgreSQL ``timestamptz_recv``: an int8 of µs since 2000-01-01), which is also
``int8``'s: such columns are dumped as ``int8`` in the binary COPY (psycopg's C int dumper) and
the server reads them as ``timestamptz``. It spares building two ``datetime`` objects per
measurement in the decoder and converting them back in psycopg. A noise or air measurement,
whose record makes one row and nothing else, is decoded straight to that row (a decoder compiled
to return a tuple of its fields, ``schemas._decoder.compile_tuple_decoder``): no record dict of
~35 keys built and taken apart again; when written with the current schema, it is even transcoded
straight to the bytes of its binary COPY tuple (:mod:`sinks.timescale._copyrow`, compiled),
without Python values at all. A batch is written as

1. raw rows (measurements, counts, regions): binary ``COPY`` straight into the table inside a
   savepoint. A raw row is never written twice unless Kafka holds a duplicate record (an ingest
   redelivery, a replay): then the natural key rejects the COPY (``unique_violation``), the
   savepoint is rolled back and the table's rows take the path of step 2. The common case thus
   costs what ``psql \\copy`` costs, instead of a staging write plus a conflict-checked insert;
2. aggregates, and raw rows that met a duplicate: binary ``COPY`` into a temporary staging table
   (``ON COMMIT DELETE ROWS``, created once per connection), then ``INSERT INTO <table> SELECT …
   FROM <staging> ON CONFLICT (<natural key>) DO NOTHING`` for raw rows, or ``… DO UPDATE …
   WHERE <the incoming revision wins>`` for aggregates;
3. an upsert of the consumed offsets into ``consumer_offsets``,

all in one transaction, so rows and offsets commit together
(docs/architecture.md#delivery-guarantees, rule 5); the natural keys make the rows exactly-once
whichever path wrote them.

``jsonb`` values are built as jsonb's binary wire format (a version byte ``1`` then the JSON
text, PostgreSQL ``jsonb_recv``) and sent as ``bytea`` in the COPY, so the server reads them into
``jsonb`` without a cast and the row builder skips a ``bytes.decode``.
"""

from __future__ import annotations

import operator
import struct
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import orjson
import psycopg
from psycopg import sql

from schemas import POSITION_FIELDS, epoch_micros, typed_quantities
from schemas._framing import SINGLE_OBJECT_MARKER, micros_decoder
from schemas._registry import version

try:
    from sinks.timescale import _copyrow
except ImportError:  # librt, mypyc's runtime library, comes with mypy: a development dependency
    _copyrow = None  # type: ignore[assignment]

__all__ = [
    "AGGREGATE_TABLES",
    "AIR_CELL_AGGREGATES",
    "MEASUREMENT_TABLES",
    "TABLES",
    "Column",
    "Row",
    "RowError",
    "Rows",
    "Table",
    "add_record",
    "aggregate_wins",
    "cell_geometry",
    "cell_row",
    "check_record",
    "decode_record",
    "decode_record_generic",
    "is_poison",
    "load_offsets",
    "pg_micros",
    "prepare_connection",
    "record_labels",
    "row_values",
    "store_offsets",
    "write_rows",
]

_HEALTH = ("battery_pct", "battery_v", "board_temperature_c")
_SOURCE = ("network", "gateway_id", "rssi", "snr", "f_cnt")


#: PostgreSQL's epoch, 2000-01-01T00:00:00Z, in µs since 1970.
PG_EPOCH_MICROS: Final = 946_684_800_000_000


def pg_micros(value: datetime) -> int:
    """An aware ``datetime`` as :func:`decode_record` reads a timestamp: µs since 2000-01-01."""
    return epoch_micros(value) - PG_EPOCH_MICROS


class RowError(ValueError):
    """A decoded record that cannot become rows (unknown kind or schema); dead-lettered."""


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``sql_type`` is its type (and its staging column's), ``copy_type`` the
    type its values are dumped as in a binary COPY (``bytea`` for jsonb, ``int8`` for
    timestamptz: see the module doc)."""

    name: str
    sql_type: str

    @property
    def copy_type(self) -> str:
        return _COPY_AS.get(self.sql_type, self.sql_type)


#: Column types whose values are dumped as another type of the same binary format.
_COPY_AS: Final[Mapping[str, str]] = {"jsonb": "bytea", "timestamptz": "int8"}


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: "raw" rows are immutable (DO NOTHING); "aggregate" rows are replaced by a winning revision.
    mode: Literal["raw", "aggregate"] = "raw"
    staging: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "staging", f"citysense_stage_{self.name}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _f(name: str) -> Column:
    return Column(name, "float8")


#: The leading columns of a measurement table, in the COPY's order: the Avro records' (sensor_id
#: comes first there), so that the transcoder (:func:`_copy_program`) writes fields as it reads
#: them. The order of the columns of a COPY is its column list's, not the table's.
_HEAD = (
    Column("sensor_id", "text"),
    Column("time", "timestamptz"),
    Column("received_at", "timestamptz"),
    Column("codec", "text"),
    Column("partial", "bool"),
)
_TAIL = (
    Column("other_values", "jsonb"),
    Column("network", "text"),
    Column("gateway_id", "text"),
    Column("rssi", "float8"),
    Column("snr", "float8"),
    Column("f_cnt", "int8"),
)
#: Typed quantity columns per kind, in the Avro schema's field order (see _HEAD); the tables
#: (migrations/0001_schema.sql) have them in another order for noise, which does not matter.
QUANTITY_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "noise": (
        "laeq_db",
        "laf_db",
        "las_db",
        "lafmax_db",
        "lafmin_db",
        "lasmax_db",
        "lasmin_db",
        "lamax_db",
        "lamin_db",
        "lceq_db",
        "lcpeak_db",
        "lcmax_db",
        "lzeq_db",
        "lzpeak_db",
        "lzmax_db",
        "lz_31_5hz_db",
        "lz_63hz_db",
        "lz_125hz_db",
        "lz_250hz_db",
        "lz_500hz_db",
        "lz_1000hz_db",
        "lz_2000hz_db",
        "lz_4000hz_db",
        "lz_8000hz_db",
        *_HEALTH,
    ),
    "air": (
        "pm1_ugm3",
        "pm2_5_ugm3",
        "pm4_ugm3",
        "pm10_ugm3",
        "no2_ugm3",
        "o3_ugm3",
        "so2_ugm3",
        "co_mgm3",
        "co2_ppm",
        "tvoc_ppb",
        "hcho_mgm3",
        "temperature_c",
        "humidity_pct",
        "pressure_hpa",
        *_HEALTH,
    ),
    "traffic": _HEALTH,
    "occupancy": _HEALTH,
}

#: Position columns per kind, after the source's, in the Avro schema's field order (the air
#: record's last fields, ``schemas.POSITION_FIELDS``; migrations/0004_mobile_air.sql).
POSITION_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {"air": POSITION_FIELDS}
MEASUREMENT_TABLES: Final[Mapping[str, Table]] = {
    kind: Table(
        f"{kind}_measurements",
        (
            *_HEAD,
            *(_f(q) for q in quantities),
            *_TAIL,
            *(_f(p) for p in POSITION_COLUMNS.get(kind, ())),
        ),
        ("sensor_id", "time"),
    )
    for kind, quantities in QUANTITY_COLUMNS.items()
}
TRAFFIC_COUNTS: Final = Table(
    "traffic_counts",
    (
        Column("time", "timestamptz"),
        Column("sensor_id", "text"),
        Column("line", "int4"),
        Column("direction", "text"),
        Column("traffic_class", "text"),
        Column("count", "int8"),
        Column("cumulative", "int8"),
    ),
    ("sensor_id", "line", "direction", "traffic_class", "time"),
)
OCCUPANCY_REGIONS: Final = Table(
    "occupancy_regions",
    (
        Column("time", "timestamptz"),
        Column("sensor_id", "text"),
        Column("region", "int4"),
        Column("count", "int4"),
    ),
    ("sensor_id", "region", "time"),
)
_AGGREGATE_COLUMNS = (
    Column("bucket", "timestamptz"),
    Column("bucket_end", "timestamptz"),
    Column("window_seconds", "int8"),
    Column("key", "text"),
    Column("revision", "int4"),
    Column("final", "bool"),
    Column("sample_count", "int8"),
    Column("indicators", "jsonb"),
    Column("counts", "jsonb"),
    Column("regions", "jsonb"),
)
#: The grid stage's cells (``CellAggregate`` records, migrations/0004_mobile_air.sql); the key
#: columns sit where the other aggregates' do (bucket, bucket_end, window_seconds, key, revision,
#: final), which :class:`Rows` relies on.
AIR_CELL_AGGREGATES: Final = Table(
    "air_cell_aggregates",
    (
        Column("bucket", "timestamptz"),
        Column("bucket_end", "timestamptz"),
        Column("window_seconds", "int8"),
        Column("cell_id", "text"),
        Column("revision", "int4"),
        Column("final", "bool"),
        Column("sample_count", "int8"),
        Column("vehicle_count", "int4"),
        Column("pm2_5_ugm3_mean", "float8"),
        Column("pm2_5_ugm3_max", "float8"),
        Column("eaqi_band", "int4"),
        Column("resolution_m", "int4"),
        Column("geometry", "jsonb"),
    ),
    ("cell_id", "window_seconds", "bucket"),
    "aggregate",
)
AGGREGATE_TABLES: Final[Mapping[str, Table]] = {
    kind: Table(
        f"{kind}_aggregates", _AGGREGATE_COLUMNS, ("key", "window_seconds", "bucket"), "aggregate"
    )
    for kind in QUANTITY_COLUMNS
}
TABLES: Final[Mapping[str, Table]] = {
    t.name: t
    for t in (
        *MEASUREMENT_TABLES.values(),
        TRAFFIC_COUNTS,
        OCCUPANCY_REGIONS,
        *AGGREGATE_TABLES.values(),
        AIR_CELL_AGGREGATES,
    )
}

# --- row building (pure) ---------------------------------------------------------------------


#: The version byte of jsonb's binary format (PostgreSQL src/backend/utils/adt/jsonb.c).
_JSONB_VERSION: Final = b"\x01"


def _jsonb(value: Mapping[str, Any] | Sequence[Any]) -> bytes:
    """``value`` in jsonb's binary wire format (see the module doc)."""
    return _JSONB_VERSION + orjson.dumps(value)


def _jsonb_or_none(value: Mapping[str, Any] | Sequence[Any]) -> bytes | None:
    return _JSONB_VERSION + orjson.dumps(value) if value else None


def _measurement_builder(kind: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    columns = QUANTITY_COLUMNS[kind]
    # One C call for the leading columns, in table order: _HEAD, then the typed quantities.
    get_head = operator.itemgetter(
        "sensor_id", "observed_at", "received_at", "codec", "partial", *columns
    )
    # Quantities the Avro record types but this table does not (a schema newer than the
    # migrations): kept in other_values rather than lost.
    spill = tuple(sorted(typed_quantities(kind) - set(columns)))
    get_source = operator.itemgetter(*_SOURCE)
    no_source = (None,) * len(_SOURCE)
    position = POSITION_COLUMNS.get(kind, ())
    dumps = orjson.dumps
    version = _JSONB_VERSION

    def build(record: Mapping[str, Any]) -> tuple[Any, ...]:
        other: Mapping[str, float] = record["other_values"]
        if spill:
            extra = {q: record[q] for q in spill if record.get(q) is not None}
            if extra:
                other = {**other, **extra}
        source = record["source"]
        row: tuple[Any, ...] = (
            get_head(record)
            + (version + dumps(other) if other else None,)
            + (get_source(source) if source else no_source)
            + tuple(record.get(p) for p in position)
        )
        return row

    return build


_MEASUREMENT_KIND = {
    "NoiseMeasurement": "noise",
    "AirMeasurement": "air",
    "TrafficMeasurement": "traffic",
    "OccupancyMeasurement": "occupancy",
}
# Per measurement schema: (kind, table name, row builder), looked up once per record.
_MEASUREMENTS: Final[
    Mapping[str, tuple[str, str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]]
] = {
    schema_name: (kind, MEASUREMENT_TABLES[kind].name, _measurement_builder(kind))
    for schema_name, kind in _MEASUREMENT_KIND.items()
}
#: A decoded record: the dict :func:`schemas.decode` would return (timestamps as µs since 2000,
#: see the module doc) or, for a measurement of a kind with one row and no other (noise, air),
#: that row itself, built by :func:`decode_record` straight from the Avro body: a tuple of
#: values, or the bytes of the row's binary COPY tuple.
Record = dict[str, Any] | tuple[Any, ...] | bytes
#: A row of a table: a tuple of values, or a binary COPY tuple (see :func:`decode_record`).
Row = tuple[Any, ...] | bytes


def _flat_row_builder(kind: str) -> tuple[tuple[str, ...], Callable[[tuple[Any, ...]], Record]]:
    """The fields a measurement of ``kind`` is decoded to (a tuple), and the function making the
    table's row of that tuple: :func:`_measurement_builder`'s row, without the record dict."""
    columns = QUANTITY_COLUMNS[kind]
    spill = tuple(sorted(typed_quantities(kind) - set(columns)))
    position = POSITION_COLUMNS.get(kind, ())
    head = ("sensor_id", "observed_at", "received_at", "codec", "partial", *columns)
    fields = (*head, "other_values", "source", *position, *spill)
    n = len(head)
    p = n + 2 + len(position)
    get_source = operator.itemgetter(*_SOURCE)
    no_source = (None,) * len(_SOURCE)
    dumps = orjson.dumps
    version = _JSONB_VERSION

    def build(values: tuple[Any, ...]) -> Record:
        other: Mapping[str, float] = values[n]
        if spill:
            extra = {q: v for q, v in zip(spill, values[p:], strict=True) if v is not None}
            if extra:
                other = {**other, **extra}
        source = values[n + 1]
        row: tuple[Any, ...] = (
            values[:n]
            + (version + dumps(other) if other else None,)
            + (get_source(source) if source else no_source)
            + values[n + 2 : p]
        )
        return row

    return fields, build


#: The :func:`sinks.timescale._copyrow.copy_row` operation of each Avro type it writes to a column
#: (``_SKIP_OPS``: of each type it reads and drops), by :func:`_type_key`.
_OPS: Final[Mapping[str, int]] = (
    {}
    if _copyrow is None
    else {
        "string": _copyrow.OP_STRING,
        "timestamp-micros": _copyrow.OP_MICROS,
        "boolean": _copyrow.OP_BOOLEAN,
        "null|double": _copyrow.OP_OPTIONAL_DOUBLE,
        "null|string": _copyrow.OP_OPTIONAL_STRING,
        "null|long": _copyrow.OP_OPTIONAL_LONG,
        "map<double>": _copyrow.OP_MAP_DOUBLE_JSONB,
    }
)
_SKIP_OPS: Final[Mapping[str, int]] = (
    {}
    if _copyrow is None
    else {"string": _copyrow.OP_SKIP_STRING, "null|string": _copyrow.OP_SKIP_OPTIONAL_STRING}
)
#: Avro fields of a measurement without a column: ``kind`` (the table says it) and the source's
#: fields that are not stored.
_DROPPED: Final = frozenset({"kind", "source.dev_eui", "source.dedup_id", "source.idempotency_key"})
#: Avro field → column, where the names differ.
_COLUMN_OF: Final = {"observed_at": "time", **{f"source.{c}": c for c in _SOURCE}}


def _type_key(schema: Any) -> str | None:
    """A short name of the Avro types :func:`_copy_program` handles; None for any other."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "|".join(b if isinstance(b, str) else "?" for b in schema)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros" and schema.get("type") == "long":
            return "timestamp-micros"
        if schema.get("type") == "map" and schema.get("values") == "double":
            return "map<double>"
    return None


def _copy_program(writer: Mapping[str, Any], table: Table) -> bytes | None:
    """The :func:`~sinks.timescale._copyrow.copy_row` program turning a record of ``writer``
    (a parsed Avro schema) into a COPY tuple of ``table``'s columns, in their order; None when
    the fields do not map one to one onto the columns in that order (another schema version, a
    typed quantity without a column: the ordinary decoder and row builder handle those)."""
    program = bytearray()
    columns: list[str] = []

    def walk(fields: Sequence[Mapping[str, Any]], prefix: str) -> bool:
        for avro_field in fields:
            name = prefix + avro_field["name"]
            schema = avro_field["type"]
            if isinstance(schema, dict) and schema.get("type") == "record":
                if not walk(schema["fields"], f"{name}."):
                    return False
                continue
            key = _type_key(schema)
            dropped = name in _DROPPED
            op = (_SKIP_OPS if dropped else _OPS).get(key or "")
            if op is None:
                return False
            program.append(op)
            if not dropped:
                columns.append(_COLUMN_OF.get(name, name))
        return True

    if not walk(writer["fields"], "") or tuple(columns) != table.column_names:
        return None
    return bytes(program)


def _copy_programs() -> dict[bytes, tuple[str, bytes, int]]:
    """Per single-object fingerprint of a current noise or air schema whose records map onto
    their table: (schema name, program, the tuple's field count).

    None unless the transcoder is compiled (``make native``): run from its source it takes ~12 µs
    a record, twice what the ordinary decoder and psycopg's formatter take (~0.8 µs compiled).
    """
    programs: dict[bytes, tuple[str, bytes, int]] = {}
    if _copyrow is None or _copyrow.__file__.endswith(".py"):
        return programs
    for schema_name in _FLAT:
        writer = version(schema_name)
        table = MEASUREMENT_TABLES[_MEASUREMENT_KIND[schema_name]]
        program = _copy_program(writer.parsed, table)
        if program is not None:
            programs[writer.fingerprint] = (schema_name, program, len(table.columns))
    return programs


def _copy_values(row: bytes, count: int) -> list[Any]:
    """The first ``count`` values of a measurement's COPY tuple (see :func:`decode_record`), as
    the row builder has them: text as ``str``, timestamps as int µs, for dead letters."""
    values: list[Any] = []
    pos = 2
    for column in _HEAD[:count]:
        (length,) = _INT4.unpack_from(row, pos)
        pos += 4
        if length < 0:
            values.append(None)
            continue
        raw = row[pos : pos + length]
        pos += length
        if column.sql_type == "text":
            values.append(raw.decode())
        elif column.sql_type == "timestamptz":
            values.append(_INT8.unpack(raw)[0])
        else:
            values.append(raw == b"\x01")
    return values


_INT4: Final = struct.Struct(">i")
_INT8: Final = struct.Struct(">q")


#: Measurement schemas whose records are decoded straight to their one row.
_FLAT: Final = {
    schema_name: _flat_row_builder(kind)
    for schema_name, kind in _MEASUREMENT_KIND.items()
    if kind in ("noise", "air")
}
_FLAT_ROWS: Final = {name: build for name, (_, build) in _FLAT.items()}
_decode = micros_decoder(PG_EPOCH_MICROS, {name: fields for name, (fields, _) in _FLAT.items()})
_PROGRAMS: Final = _copy_programs()
_copy_row: Final = _copyrow.copy_row if _copyrow is not None else None


def decode_record(value: bytes) -> tuple[str, Record]:
    """A Kafka value → ``(schema name, record)``: :func:`schemas.decode`'s record, except that
    ``timestamp-micros`` fields are ints of µs since PostgreSQL's epoch (see the module doc) and
    that a noise or air measurement comes back as its table row (see :data:`Record`): as the
    ``bytes`` of its binary COPY tuple when written with the current schema (transcoded, see
    :mod:`sinks.timescale._copyrow`), else as a tuple.

    Raises :class:`schemas.SchemaError` as ``schemas.decode`` does, for the same values.
    """
    fast = _PROGRAMS.get(value[2:10]) if type(value) is bytes else None  # bytes: hashable
    if fast is not None and value[:2] == SINGLE_OBJECT_MARKER:
        assert _copy_row is not None  # there are programs
        row = _copy_row(value, 10, fast[1], fast[2])
        if row is not None:
            return fast[0], row
    return decode_record_generic(value)


def decode_record_generic(value: bytes) -> tuple[str, Record]:
    """:func:`decode_record` without the COPY transcoder: every value through the generic Avro
    decoder (a noise or air measurement as a tuple row). The ``sink-copy`` fast path off
    (``CITYSENSE_LEAN``, docs/runtime.md#fast-paths) uses it for every record."""
    name, record = _decode(value)
    build = _FLAT_ROWS.get(name)
    if build is not None:
        return name, build(record)
    return name, record


def record_labels(schema_name: str, record: Record) -> tuple[str | None, str | None]:
    """``(codec, sensor id)`` of a decoded record, for a dead letter: the sensor id is the key of
    an aggregate, and each is None when the record has none."""
    if type(record) is tuple:
        return record[3], record[0] or None  # a flat measurement's row: _HEAD's order
    if type(record) is bytes:  # a flat measurement's COPY tuple, from decode_record
        sensor_id, _, _, codec = _copy_values(record, 4)
        return codec, sensor_id or None
    assert isinstance(record, dict)
    return record.get("codec"), record.get("sensor_id") or record.get("key")


_COUNT_COLUMNS = operator.itemgetter("line", "direction", "traffic_class", "count", "cumulative")
_REGION_COLUMNS = operator.itemgetter("region", "count")


class Rows:
    """Rows of one batch per table, and the winning aggregate per identity."""

    __slots__ = ("_aggregates", "by_table")

    def __init__(self) -> None:
        self.by_table: dict[str, list[Row]] = {}
        # Identity: (key, window seconds, bucket as µs since 2000).
        self._aggregates: dict[str, dict[tuple[str, int, int], tuple[Any, ...]]] = {}

    def add_aggregate(self, table: str, row: tuple[Any, ...]) -> None:
        # ON CONFLICT DO UPDATE may not touch a row twice in one statement: keep the winner of
        # the batch, applying the same rule as the SQL (records arrive in offset order).
        identity = (row[3], row[2], row[0])
        rows = self._aggregates.setdefault(table, {})
        current = rows.get(identity)
        if current is None or aggregate_wins(row[4], current[4], current_final=current[5]):
            rows[identity] = row

    def tables(self) -> dict[str, list[Row]]:
        """Every table's rows, aggregates deduplicated."""
        result = dict(self.by_table)
        for table, rows in self._aggregates.items():
            result[table] = [*rows.values()]
        return result

    def __len__(self) -> int:
        return sum(len(r) for r in self.by_table.values()) + sum(
            len(r) for r in self._aggregates.values()
        )


def aggregate_wins(incoming: int, current: int, *, current_final: bool) -> bool:
    """True when an aggregate of revision ``incoming`` replaces the stored one.

    A higher revision wins; at the same revision a later emission replaces an intermediate
    (non-final) one, so "every update" windows show their newest state. An older revision never
    overwrites a newer one. ``_upsert_sql`` states the same rule in SQL.
    """
    return incoming > current or (incoming == current and not current_final)


def check_record(schema_name: str, record: Record) -> None:
    """``RowError`` unless a decoded record has a table (see :func:`add_record`)."""
    if schema_name in _MEASUREMENT_KIND or schema_name == "CellAggregate":
        return
    if schema_name != "Aggregate":
        raise RowError(f"no table for {schema_name} records")
    assert isinstance(record, dict)  # only flat measurements decode to a tuple
    if record["kind"] not in AGGREGATE_TABLES:
        raise RowError(f"aggregate of unknown kind {record['kind']!r}")


def _rows_of(rows: Rows, table: str) -> list[Row]:
    try:
        return rows.by_table[table]
    except KeyError:
        added: list[Row] = []
        rows.by_table[table] = added
        return added


def add_record(rows: Rows, schema_name: str, record: Record) -> None:
    """Add the rows of one decoded record (as :func:`decode_record` returns it, or a dict of the
    same values); ``RowError`` when it has no table."""
    measurement = _MEASUREMENTS.get(schema_name)
    if type(record) is tuple or type(record) is bytes:  # a flat measurement's row
        if measurement is None or schema_name not in _FLAT:
            raise RowError(f"no table for {schema_name} rows")
        table = measurement[1]
        try:
            rows.by_table[table].append(record)
        except KeyError:
            rows.by_table[table] = [record]
        return
    assert isinstance(record, dict)
    if measurement is not None:
        kind, table, build = measurement
        row = build(record)
        try:
            rows.by_table[table].append(row)
        except KeyError:
            rows.by_table[table] = [row]
        if kind == "traffic":
            counts = record["counts"]
            if counts:
                head = (record["observed_at"], record["sensor_id"])
                _rows_of(rows, "traffic_counts").extend([head + _COUNT_COLUMNS(c) for c in counts])
        elif kind == "occupancy":
            regions = record["regions"]
            if regions:
                head = (record["observed_at"], record["sensor_id"])
                _rows_of(rows, "occupancy_regions").extend(
                    [head + _REGION_COLUMNS(r) for r in regions]
                )
        return
    if schema_name == "Aggregate":
        aggregates = AGGREGATE_TABLES.get(record["kind"])
        if aggregates is None:
            raise RowError(f"aggregate of unknown kind {record['kind']!r}")
        rows.add_aggregate(
            aggregates.name,
            (
                record["window_start"],
                record["window_end"],
                record["window_size_seconds"],
                record["key"],
                record["revision"],
                record["final"],
                record["sample_count"],
                _jsonb(record["values"]),
                _jsonb_or_none(record["counts"]),
                _jsonb_or_none(record["regions"]),
            ),
        )
        return
    if schema_name == "CellAggregate":
        rows.add_aggregate(AIR_CELL_AGGREGATES.name, cell_row(record))
        return
    raise RowError(f"no table for {schema_name} records")


def cell_geometry(corners: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """A cell's corners as a GeoJSON Polygon (RFC 7946 section 3.1.6: one linear ring, first
    and last positions equal, exterior ring counter-clockwise, positions as [lon, lat])."""
    ring = [[c["lon"], c["lat"]] for c in corners]
    if ring:
        ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def cell_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The ``air_cell_aggregates`` row of a ``CellAggregate`` record."""
    return (
        record["window_start"],
        record["window_end"],
        record["window_size_seconds"],
        record["cell_id"],
        record["revision"],
        record["final"],
        record["sample_count"],
        record["vehicle_count"],
        record["pm2_5_ugm3_mean"],
        record["pm2_5_ugm3_max"],
        record["eaqi_band"],
        record["resolution_m"],
        _jsonb(cell_geometry(record["corners"])),
    )


# --- SQL ---------------------------------------------------------------------------------------


def _staging_sql(table: Table) -> sql.Composed:
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in table.columns
    )
    return sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(table.staging), columns
    )


def _copy_sql(table: Table, target: str) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(target),
        sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
    )


def _insert_sql(table: Table) -> sql.Composed:
    names = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
    key = sql.SQL(", ").join(sql.Identifier(c) for c in table.key)
    insert = sql.SQL("INSERT INTO {} AS cur ({}) SELECT {} FROM {} ON CONFLICT ({}) ").format(
        sql.Identifier(table.name), names, names, sql.Identifier(table.staging), key
    )
    if table.mode == "raw":
        return insert + sql.SQL("DO NOTHING")
    updated = [c for c in table.column_names if c not in table.key]
    assignments = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updated
    )
    # Same rule as aggregate_wins().
    return insert + sql.SQL(
        "DO UPDATE SET {}, updated_at = now() "
        "WHERE EXCLUDED.revision > cur.revision "
        "OR (EXCLUDED.revision = cur.revision AND NOT cur.final)"
    ).format(assignments)


_STAGING = {name: _staging_sql(t) for name, t in TABLES.items()}
_COPY_STAGING = {name: _copy_sql(t, t.staging) for name, t in TABLES.items()}
#: Raw tables only: aggregates are always upserted through their staging table.
_COPY_DIRECT = {name: _copy_sql(t, t.name) for name, t in TABLES.items() if t.mode == "raw"}
_INSERT = {name: _insert_sql(t) for name, t in TABLES.items()}
_CLEAR = {
    name: sql.SQL("DELETE FROM {}").format(sql.Identifier(t.staging)) for name, t in TABLES.items()
}
_COPY_TYPES = {name: [c.copy_type for c in t.columns] for name, t in TABLES.items()}


async def _copy(
    cur: psycopg.AsyncCursor[Any],
    statement: sql.Composed,
    types: Sequence[str],
    rows: Sequence[Row],
) -> None:
    """Binary COPY of ``rows``.

    Rows already in the COPY format (``bytes``, see :func:`decode_record`) are sent as they are,
    after the stream's header (PostgreSQL documentation, "COPY", "Binary Format"), in writes of
    about ``_COPY_CHUNK`` bytes. The others go through the formatter synchronously (psycopg's C
    ``format_row_binary``), and only its filled buffers (32 KiB) are awaited:
    ``AsyncCopy.write_row`` would cost a coroutine per row. ``AsyncCopy.write`` passes a binary
    buffer through as it is; the formatter ends the stream with the trailer when it was fed
    rows, else the trailer is written here.
    """
    encoded: list[bytes] = [row for row in rows if type(row) is bytes]
    values: Sequence[Row] = rows
    if encoded and cur.connection.info.encoding != "utf-8":
        # COPY tuples hold UTF-8 text, which the server reads in the client encoding.
        values, encoded = [_copy_tuple(row, types) for row in rows], []
    elif encoded:
        values = [row for row in rows if type(row) is not bytes] if len(encoded) < len(rows) else ()
    async with cur.copy(statement) as copy:
        copy.set_types(types)
        if encoded:
            chunk = [_COPY_SIGNATURE]
            size = 0
            for tuple_bytes in encoded:
                chunk.append(tuple_bytes)
                size += len(tuple_bytes)
                if size >= _COPY_CHUNK:
                    await copy.write(b"".join(chunk))
                    chunk, size = [], 0
            if not values:
                chunk.append(_COPY_TRAILER)
            await copy.write(b"".join(chunk))
        format_row = copy.formatter.write_row
        for row in values:
            if data := format_row(row):
                await copy.write(data)


#: The binary COPY stream's header (signature, flags, header extension length) and trailer
#: (PostgreSQL documentation, "COPY", "Binary Format").
_COPY_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER: Final = b"\xff\xff"
_COPY_CHUNK: Final = 256 * 1024


def row_values(table: str, row: Row) -> tuple[Any, ...]:
    """A row of ``table`` as a tuple of values (a COPY tuple parsed back: jsonb as its binary
    format, timestamps as int µs since 2000), e.g. to write it as CSV."""
    return _copy_tuple(row, _COPY_TYPES[table])


def _copy_tuple(row: Row, types: Sequence[str]) -> tuple[Any, ...]:
    """A row as a tuple of values (a COPY tuple parsed back), for :func:`_copy`'s formatter."""
    if type(row) is not bytes:
        assert isinstance(row, tuple)
        return row
    loaders: dict[str, Callable[[bytes], Any]] = {
        "text": bytes.decode,
        "int8": lambda raw: _INT8.unpack(raw)[0],
        "float8": lambda raw: _FLOAT8.unpack(raw)[0],
        "bool": lambda raw: raw == b"\x01",
        "bytea": bytes,
    }
    values: list[Any] = []
    pos = 2
    for copy_type in types:
        (length,) = _INT4.unpack_from(row, pos)
        pos += 4
        if length < 0:
            values.append(None)
            continue
        values.append(loaders[copy_type](row[pos : pos + length]))
        pos += length
    return tuple(values)


_FLOAT8: Final = struct.Struct(">d")


async def prepare_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the aggregates' staging tables of a new session, committed; the sink's pool runs it
    on every connection it opens (``configure``).

    Aggregates go through their staging table in every batch; without this, each batch would
    ask for each of them again (``CREATE TEMPORARY TABLE IF NOT EXISTS``: a round trip, a catalog
    lookup and a notice per aggregate table). Created and committed here, outside any batch, a
    rolled-back batch cannot take them away; temporary tables last as long as the session, and
    the pool does not reset sessions. Raw tables' staging tables, used only when a COPY meets a
    duplicate, are still created on demand.
    """
    for name, table in TABLES.items():
        if table.mode == "aggregate":
            await conn.execute(_STAGING[name])
    await conn.commit()
    _STAGED[conn] = _AGGREGATE_STAGING


#: The staging tables each session has already created (see :func:`prepare_connection`).
_STAGED: Final[weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)
_AGGREGATE_STAGING: Final = frozenset(n for n, t in TABLES.items() if t.mode == "aggregate")


async def write_rows(
    conn: psycopg.AsyncConnection[Any],
    tables: Mapping[str, Sequence[Row]],
    *,
    clear_staging: bool = False,
    copy_direct: bool = True,
) -> dict[str, int]:
    """COPY and insert ``tables`` inside the caller's transaction; returns rows added per table.

    Rows already present (a replay) are not counted. ``copy_direct`` False sends raw rows through
    the staging table at once (what a COPY meeting a duplicate falls back to). ``clear_staging``
    empties the staging tables afterwards, for callers that write several times in one
    transaction (poison isolation).

    Every raw table's COPY shares one savepoint: a batch of the four kinds costs two statements
    besides its COPYs, not two per table. Should one of them meet a duplicate, the savepoint is
    rolled back (all of them) and each raw table is written again in a savepoint of its own, so
    that only the table holding the duplicate takes the ``ON CONFLICT`` path.
    """
    written: dict[str, int] = {}
    async with conn.cursor() as cur:
        pending = {name: rows for name, rows in tables.items() if rows}
        direct = [name for name in pending if name in _COPY_DIRECT] if copy_direct else []
        if len(direct) > 1:
            await cur.execute("SAVEPOINT citysense_copy")
            try:
                for name in direct:
                    await _copy(cur, _COPY_DIRECT[name], _COPY_TYPES[name], pending[name])
            except psycopg.errors.UniqueViolation:
                await cur.execute("ROLLBACK TO SAVEPOINT citysense_copy")
            else:
                await cur.execute("RELEASE SAVEPOINT citysense_copy")
                for name in direct:
                    written[name] = len(pending.pop(name))
        staged = _STAGED.get(conn, frozenset())
        for name, rows in pending.items():
            if copy_direct and name in _COPY_DIRECT:
                await cur.execute("SAVEPOINT citysense_copy")
                try:
                    await _copy(cur, _COPY_DIRECT[name], _COPY_TYPES[name], rows)
                except psycopg.errors.UniqueViolation:
                    # A duplicate record in Kafka: this table's rows take the ON CONFLICT path.
                    await cur.execute("ROLLBACK TO SAVEPOINT citysense_copy")
                else:
                    await cur.execute("RELEASE SAVEPOINT citysense_copy")
                    written[name] = len(rows)
                    continue
            if name not in staged:
                await cur.execute(_STAGING[name])
            await _copy(cur, _COPY_STAGING[name], _COPY_TYPES[name], rows)
            await cur.execute(_INSERT[name])
            written[name] = max(cur.rowcount, 0)
            if clear_staging:
                await cur.execute(_CLEAR[name])
    return written


_STORE_OFFSETS = """
INSERT INTO consumer_offsets (group_id, topic, "partition", next_offset)
SELECT %s, t, p, o FROM unnest(%s::text[], %s::int4[], %s::int8[]) AS u(t, p, o)
ON CONFLICT (group_id, topic, "partition")
DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""


async def store_offsets(
    conn: psycopg.AsyncConnection[Any],
    group_id: str,
    offsets: Mapping[tuple[str, int], int],
) -> None:
    """Upsert the next offset to read per (topic, partition) inside the caller's transaction."""
    if not offsets:
        return
    keys = list(offsets)
    await conn.execute(
        _STORE_OFFSETS,
        (group_id, [t for t, _ in keys], [p for _, p in keys], [offsets[k] for k in keys]),
    )


async def load_offsets(
    conn: psycopg.AsyncConnection[Any], group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Stored next offsets of ``partitions`` (absent when never written)."""
    wanted = list(partitions)
    if not wanted:
        return {}
    cursor = await conn.execute(
        'SELECT topic, "partition", next_offset FROM consumer_offsets '
        'WHERE group_id = %s AND (topic, "partition") IN '
        "(SELECT * FROM unnest(%s::text[], %s::int4[]))",
        (group_id, [t for t, _ in wanted], [p for _, p in wanted]),
    )
    return {(str(t), int(p)): int(o) for t, p, o in await cursor.fetchall()}


#: SQLSTATE classes of errors caused by the data itself: 22 data exception, 23 integrity
#: constraint violation, 54 program limit exceeded (e.g. an index row too large).
_POISON_CLASSES = frozenset({"22", "23", "54"})


def is_poison(error: BaseException) -> bool:
    """True when ``error`` is the database rejecting a value, not the database being away.

    Client-side data errors (psycopg refusing a NUL byte in text) count as rejections too.
    """
    if isinstance(error, psycopg.DataError | psycopg.IntegrityError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _POISON_CLASSES
