"""One partition's polled measurement records → numpy columns, for the stream aggregator.

Why: the aggregator folds ≥ 200,000 records a second in one process, with ~1 µs a record left
once aiokafka has consumed it. The generic decoder (:func:`schemas.decode`, 9-12 µs a noise
record) builds every field as a Python object; the aggregator needs the key, the event time, a
few doubles and the traffic or occupancy counts. :func:`extract` reads just those from the Avro
bytes of a whole poll in one call into the compiled core (:mod:`streams._extract`) and returns
them as packed columns (:class:`Columns`): ~0.4 µs a noise record in all, ~0.6 µs a traffic
record of 3 counts.

The core reads the records written with a schema version it has a *program* for (built here from
the writer schema, :func:`_program`: every current measurement schema and older versions whose
extracted fields resolve unchanged into the current ones). Every other record — an unknown or
unsupported version, a malformed or unusual body, a key that is not UTF-8 — is decoded the
ordinary way, record by record, and either added the same way (same values: the parity tests
check it) or rejected with a reason, for the caller to dead-letter. Nothing a record holds makes
:func:`extract` raise.

Without the compiled core (no ``make native``) the program interpreter run as plain Python is
slower than the generic decoder (~21 µs a noise record against ~13), so every record then takes
the ordinary path (~17 µs in all); without librt
(mypyc's runtime library, a development dependency) the columns are gathered in ``array``s.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, Final

import numpy as np

import schemas
from decoders import TRAFFIC_CLASSES
from schemas import (
    POSITION_FIELDS,
    SchemaError,
    epoch_micros,
    measurement_schema_name,
    typed_quantities,
)

try:
    from streams import _extract
except ImportError:  # librt, mypyc's runtime library, comes with mypy: a development dependency
    _extract = None  # type: ignore[assignment]

__all__ = [
    "AIR_QUANTITIES",
    "DOUBLE_FIELDS",
    "MAP_FIELDS",
    "Columns",
    "KeyTable",
    "extract",
    "extract_parts",
]

#: Device health quantities: not city indicators, never aggregated.
_DEVICE_HEALTH: Final = frozenset({"battery_pct", "battery_v", "board_temperature_c"})

#: The air record's typed quantities in the schema's field order, device health left out: the
#: first columns of the air doubles, the ones the window stage folds.
AIR_QUANTITIES: Final = tuple(
    f["name"]
    for f in schemas.schema("AirMeasurement")["fields"]
    if f["name"] in typed_quantities("air") and f["name"] not in _DEVICE_HEALTH
)

#: Per kind, the double fields extracted (NaN when null), in this order. Air: its quantities,
#: then a mobile sensor's position (``lat``, ``lon``, ``position_accuracy_m``), which only the
#: grid stage reads (:mod:`streams._grid_stage`).
DOUBLE_FIELDS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "noise": (
            "laeq_db",
            "lamax_db",
            "lamin_db",
            "lafmax_db",
            "lasmax_db",
            "lafmin_db",
            "lasmin_db",
            "la_db",
        ),
        "air": (*AIR_QUANTITIES, *POSITION_FIELDS),
        "traffic": (),
        "occupancy": (),
    }
)

#: Per kind, the one extracted quantity that has no typed field and is read from the record's
#: ``other_values`` map: a spot A-weighted level (``la_db``, e.g. the Browan TBSL100's), which
#: the aggregator uses as a level sample where a device gives no LAeq.
MAP_FIELDS: Final[Mapping[str, str]] = MappingProxyType({"noise": "la_db"})

#: ``count_direction`` values.
_DIRECTIONS: Final = {"in": 0, "out": 1}
#: ``count_class`` values: indexes into ``decoders.TRAFFIC_CLASSES``.
_CLASS_INDEX: Final = {name: i for i, name in enumerate(TRAFFIC_CLASSES)}
_CLASS_BYTES: Final = [name.encode() for name in TRAFFIC_CLASSES]


class KeyTable:
    """Kafka keys (UTF-8 sensor ids) ↔ dense int indexes, stable for the process's life.

    ``ids`` (index → sensor id) and ``lookup`` (key bytes → index) are shared with the compiled
    core, which adds the new keys it meets; only ever append to them.
    """

    __slots__ = ("ids", "lookup")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lookup: dict[bytes, int] = {}

    def index(self, key: bytes) -> int:
        """The index of ``key``, added when unknown; ``UnicodeDecodeError`` (a ``ValueError``)
        when it is not UTF-8."""
        index = self.lookup.get(key)
        if index is None:
            name = key.decode()
            index = len(self.ids)
            self.ids.append(name)
            self.lookup[bytes(key)] = index
        return index

    def name(self, index: int) -> str:
        """The sensor id of ``index``."""
        return self.ids[index]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class Columns:
    """One partition's polled records as columns; row i is the i-th accepted record (records
    read by the compiled core first, in offset order, then the others, in offset order).

    Arrays other than ``doubles`` are read-only views of the packed bytes.
    """

    #: int32 [n]: :class:`KeyTable` index of the record's Kafka key.
    key: np.ndarray
    #: int64 [n]: ``observed_at``, µs since the Unix epoch (UTC).
    time_us: np.ndarray
    #: int64 [n]: Kafka offset.
    offset: np.ndarray
    #: float64 [n, len(DOUBLE_FIELDS[kind])], NaN for null.
    doubles: np.ndarray
    #: int32 [m]: row (index into the arrays above) of each traffic count.
    count_row: np.ndarray
    #: int32 [m]: counting line.
    count_line: np.ndarray
    #: int8 [m]: 0 = "in", 1 = "out".
    count_direction: np.ndarray
    #: int8 [m]: index into ``decoders.TRAFFIC_CLASSES``.
    count_class: np.ndarray
    #: int64 [m]: period count, -1 when null.
    count_value: np.ndarray
    #: int64 [m]: cumulative counter, -1 when null.
    count_cumulative: np.ndarray
    #: int32 [k]: row of each occupancy region count.
    region_row: np.ndarray
    #: int32 [k]: region.
    region_id: np.ndarray
    #: int64 [k]: people counted.
    region_count: np.ndarray
    #: (position in the input sequence, reason) of the records that are not a valid measurement
    #: of this kind, in input order: the caller dead-letters them.
    rejected: tuple[tuple[int, str], ...]

    def __len__(self) -> int:
        return len(self.key)


# --- programs -------------------------------------------------------------------------------------


def _type_key(schema: Any) -> str | None:
    """A short name of the Avro types a program steps over; None for any other."""
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


def _shape(schema: Any) -> Any:
    """A comparable summary of a parsed item field type: a name, a union's branches as a tuple,
    an enum as ``("enum", symbols)``; None for anything else."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return tuple(schema)
    if isinstance(schema, dict) and schema.get("type") == "enum":
        return ("enum", tuple(schema["symbols"]))
    return None


def _array_of(schema: Any, fields: tuple[tuple[str, Any], ...]) -> bool:
    """True when ``schema`` is an array of records of exactly these (name, type shape) fields."""
    if not isinstance(schema, dict) or schema.get("type") != "array":
        return False
    items = schema.get("items")
    if not isinstance(items, dict) or items.get("type") != "record":
        return False
    return tuple((f["name"], _shape(f["type"])) for f in items["fields"]) == fields


_COUNT_FIELDS: Final = (
    ("line", "int"),
    ("direction", ("enum", ("in", "out"))),
    ("traffic_class", "string"),
    ("count", ("null", "long")),
    ("cumulative", ("null", "long")),
)
_REGION_FIELDS: Final = (("region", "int"), ("count", "int"))
#: The array field a kind's program extracts, with its item fields and operation.
_ARRAYS: Final[Mapping[str, tuple[str, tuple[tuple[str, Any], ...]]]] = {
    "traffic": ("counts", _COUNT_FIELDS),
    "occupancy": ("regions", _REGION_FIELDS),
}


def _program(writer: Mapping[str, Any], reader: Mapping[str, Any], kind: str) -> bytes | None:
    """The :func:`streams._extract.extract` program reading a ``kind`` measurement written with
    ``writer`` (a parsed Avro schema) into the columns of its reader schema ``reader`` (the
    current version); None when the writer has a field of a type programs do not read, or when
    an extracted field does not resolve unchanged from the writer's into the reader's (another
    type, an alias, a missing field whose default is not null or empty)."""
    assert _extract is not None
    columns = {
        name: i for i, name in enumerate(DOUBLE_FIELDS[kind]) if name != MAP_FIELDS.get(kind)
    }
    array_name, array_fields = _ARRAYS.get(kind, ("", ()))
    extracted = {"kind", "observed_at", *columns, *([array_name] if array_name else [])}
    reader_fields = {f["name"]: f for f in reader["fields"]}
    writer_fields = {f["name"]: f for f in writer["fields"]}
    for name in extracted:
        wanted = reader_fields.get(name)
        if wanted is None or wanted.get("aliases"):
            return None
        if name not in writer_fields:
            if name in ("kind", "observed_at") or wanted.get("default", 0) not in (None, []):
                return None
        elif writer_fields[name]["type"] != wanted["type"]:
            return None
    program = bytearray()
    ops: Mapping[str, int] = {
        "string": _extract.OP_STRING,
        "timestamp-micros": _extract.OP_MICROS,
        "boolean": _extract.OP_BOOLEAN,
        "null|double": _extract.OP_OPTIONAL_DOUBLE,
        "null|string": _extract.OP_OPTIONAL_STRING,
        "null|long": _extract.OP_OPTIONAL_LONG,
        "map<double>": _extract.OP_MAP_DOUBLE,
    }

    def walk(fields: Sequence[Mapping[str, Any]], top: bool) -> bool:
        for field in fields:
            name = field["name"]
            schema = field["type"]
            key = _type_key(schema)
            if top and name in extracted:
                if name == "kind" and key == "string":
                    program.append(_extract.OP_KIND)
                elif name == "observed_at" and key == "timestamp-micros":
                    program.append(_extract.OP_TIME)
                elif name in columns and key == "null|double":
                    program.append(_extract.OP_DOUBLE + columns[name])
                elif name == array_name and _array_of(schema, array_fields):
                    ops_array = _extract.OP_COUNTS if kind == "traffic" else _extract.OP_REGIONS
                    program.append(ops_array)
                else:
                    return False
            elif isinstance(schema, dict) and schema.get("type") == "record":
                if not walk(schema["fields"], top=False):
                    return False
            elif top and name == "other_values" and key == "map<double>" and kind in MAP_FIELDS:
                program.append(_extract.OP_MAP_DOUBLE_COLUMN)
            elif key is not None and key in ops:
                program.append(ops[key])
            else:
                return False
        return True

    if not walk(writer["fields"], top=True):
        return None
    return bytes(program)


def _programs(kind: str) -> dict[bytes, bytes]:
    """The program of each loaded version of ``kind``'s measurement schema that has one, by
    single-object fingerprint."""
    name = measurement_schema_name(kind)
    reader = schemas.version(name).parsed
    programs: dict[bytes, bytes] = {}
    for loaded in schemas.all_versions().values():
        if loaded.name == name:
            program = _program(loaded.parsed, reader, kind)
            if program is not None:
                programs[loaded.fingerprint] = program
    return programs


#: Programs per kind; none unless the core is compiled (see the module doc).
_COMPILED: Final = _extract is not None and not _extract.__file__.endswith(".py")
_PROGRAMS: Final[Mapping[str, dict[bytes, bytes]]] = {
    kind: _programs(kind) if _COMPILED else {} for kind in DOUBLE_FIELDS
}


# --- extraction -----------------------------------------------------------------------------------


class _ArrayWriter:
    """:class:`streams._extract.ColumnWriter`'s methods the ordinary path calls, over
    ``array``s, for when librt is missing."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows = 0
        self.key = array("i")
        self.time_us = array("q")
        self.offset = array("q")
        self.double_index = array("q")
        self.double_value = array("d")
        self.count_row = array("i")
        self.count_line = array("i")
        self.count_direction = array("b")
        self.count_class = array("b")
        self.count_value = array("q")
        self.count_cumulative = array("q")
        self.region_row = array("i")
        self.region_id = array("i")
        self.region_count = array("q")

    def add_row(self, key: int, time_us: int, offset: int) -> int:
        self.key.append(key)
        self.time_us.append(time_us)
        self.offset.append(offset)
        self.rows += 1
        return self.rows - 1

    def add_double(self, row: int, column: int, value: float) -> None:
        self.double_index.append(row * self.width + column)
        self.double_value.append(value)

    def add_count(
        self, row: int, line: int, direction: int, traffic_class: int, count: int, cumulative: int
    ) -> None:
        self.count_row.append(row)
        self.count_line.append(line)
        self.count_direction.append(direction)
        self.count_class.append(traffic_class)
        self.count_value.append(count)
        self.count_cumulative.append(cumulative)

    def add_region(self, row: int, region: int, count: int) -> None:
        self.region_row.append(row)
        self.region_id.append(region)
        self.region_count.append(count)


def _add(
    out: Any,
    position: int,
    record: Any,
    kind: str,
    schema_name: str,
    keys: KeyTable,
    rejected: list[tuple[int, str]],
) -> None:
    """The ordinary path: add ``record``'s row to ``out``, or its rejection to ``rejected``."""
    key = record.key
    if key is None:
        rejected.append((position, "no key"))
        return
    if not isinstance(key, bytes):
        if not isinstance(key, bytearray | memoryview):
            rejected.append((position, f"key is not bytes but {type(key).__name__}"))
            return
        key = bytes(key)
    value = record.value
    if value is None:
        rejected.append((position, "no value"))
        return
    if not isinstance(value, bytes | bytearray | memoryview):
        rejected.append((position, f"value is not bytes but {type(value).__name__}"))
        return
    try:
        name, body = schemas.decode(bytes(value))
    except SchemaError as exc:
        rejected.append((position, f"undecodable: {exc}"))
        return
    if name != schema_name:
        rejected.append((position, f"wrong schema {name}"))
        return
    if body["kind"] != kind:
        rejected.append((position, f"wrong kind {body['kind']!r}"))
        return
    counts = body.get("counts", ()) if kind == "traffic" else ()
    for count in counts:
        if count["traffic_class"] not in _CLASS_INDEX:
            rejected.append((position, f"unknown traffic class {count['traffic_class']!r}"))
            return
    try:
        index = keys.index(key)
    except UnicodeDecodeError:
        rejected.append((position, f"key is not UTF-8: {key!r}"))
        return
    row = out.add_row(index, epoch_micros(body["observed_at"]), record.offset)
    map_field = MAP_FIELDS.get(kind)
    for column, field in enumerate(DOUBLE_FIELDS[kind]):
        number = body["other_values"].get(field) if field == map_field else body[field]
        if number is not None:
            out.add_double(row, column, number)
    for count in counts:
        out.add_count(
            row,
            count["line"],
            _DIRECTIONS[count["direction"]],
            _CLASS_INDEX[count["traffic_class"]],
            -1 if count["count"] is None else count["count"],
            -1 if count["cumulative"] is None else count["cumulative"],
        )
    if kind == "occupancy":
        for region in body["regions"]:
            out.add_region(row, region["region"], region["count"])


def column_writer(core: Any, kind: str) -> Any:
    """``core.ColumnWriter`` for ``kind``: its width, and where its map-read quantity goes."""
    map_field = MAP_FIELDS.get(kind)
    return core.ColumnWriter(
        len(DOUBLE_FIELDS[kind]),
        map_field.encode() if map_field else b"",
        DOUBLE_FIELDS[kind].index(map_field) if map_field else -1,
    )


def _columns(out: Any, rejected: list[tuple[int, str]]) -> Columns:
    rows = out.rows
    width = out.width
    doubles = np.full(rows * width, math.nan)
    doubles[np.frombuffer(_buffer(out.double_index), np.int64)] = np.frombuffer(
        _buffer(out.double_value), np.float64
    )

    def column(writer: Any, dtype: type[np.generic]) -> np.ndarray:
        return np.frombuffer(_buffer(writer), dtype)

    return Columns(
        key=column(out.key, np.int32),
        time_us=column(out.time_us, np.int64),
        offset=column(out.offset, np.int64),
        doubles=doubles.reshape(rows, width),
        count_row=column(out.count_row, np.int32),
        count_line=column(out.count_line, np.int32),
        count_direction=column(out.count_direction, np.int8),
        count_class=column(out.count_class, np.int8),
        count_value=column(out.count_value, np.int64),
        count_cumulative=column(out.count_cumulative, np.int64),
        region_row=column(out.region_row, np.int32),
        region_id=column(out.region_id, np.int32),
        region_count=column(out.region_count, np.int64),
        rejected=tuple(sorted(rejected)),
    )


def _buffer(writer: Any) -> Any:
    """The bytes of a ``BytesWriter``, or an ``array`` as it is (numpy reads both)."""
    return writer if isinstance(writer, array) else writer.getvalue()


def _extract_with(
    core: ModuleType | None,
    programs: dict[bytes, bytes],
    records: Sequence[Any],
    kind: str,
    keys: KeyTable,
) -> Columns:
    """:func:`extract` with this core module and these programs (the tests pass the core's
    plain source, or no programs)."""
    return _extract_parts_with(core, programs, (records,), kind, keys)[0]


def _extract_parts_with(
    core: ModuleType | None,
    programs: dict[bytes, bytes],
    parts: Sequence[Sequence[Any]],
    kind: str,
    keys: KeyTable,
) -> tuple[Columns, list[int]]:
    """:func:`extract_parts` with this core module and these programs."""
    schema_name = measurement_schema_name(kind)
    width = len(DOUBLE_FIELDS[kind])
    out: Any = _ArrayWriter(width) if core is None else column_writer(core, kind)
    kind_bytes = kind.encode()
    rejected: list[tuple[int, str]] = []
    stops: list[int] = []
    start = 0
    for records in parts:
        batch = records if type(records) is list else list(records)
        slow: Sequence[int]
        if core is None:
            slow = range(len(batch))
        else:
            slow = core.extract(
                out, batch, kind_bytes, programs, _CLASS_BYTES, keys.lookup, keys.ids
            )
        # A part's rows stay together (its fast ones, then its others), so each part is one
        # run of rows; rejected positions count from the first part's first record.
        part_rejected: list[tuple[int, str]] = []
        for position in slow:
            _add(out, position, batch[position], kind, schema_name, keys, part_rejected)
        rejected += [(start + position, reason) for position, reason in part_rejected]
        start += len(batch)
        stops.append(out.rows)
    return _columns(out, rejected), stops


def extract_parts(
    parts: Sequence[Sequence[Any]], kind: str, keys: KeyTable
) -> tuple[Columns, list[int]]:
    """The columns of several partitions' records (each part as :func:`extract` takes it) in
    one set of columns, and the row where each part ends: part i is rows ``stops[i-1]`` to
    ``stops[i]``, in the order :func:`extract` gives them for that part alone. ``rejected``
    positions count through the parts in order, as in their concatenation.

    Why: a live poll hands out a few records of each of a kind's partitions; one set of columns
    per partition paid the columns' fixed numpy cost (and the stage's per-batch cost) for a
    dozen records each."""
    return _extract_parts_with(_extract, _PROGRAMS.get(kind, {}), parts, kind, keys)


def extract(records: Sequence[Any], kind: str, keys: KeyTable) -> Columns:
    """The columns of ``records``, aiokafka ``ConsumerRecord``\\ s of one partition (attributes
    ``key: bytes | None``, ``value: bytes | None``, ``offset: int``), in offset order, from the
    ``kind`` measurement topic; ``keys`` gets the new keys. Raises only for an unknown ``kind``
    (:class:`schemas.SchemaError`)."""
    return _extract_with(_extract, _PROGRAMS.get(kind, {}), records, kind, keys)
