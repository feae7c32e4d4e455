"""The column extractor (``streams._columns``, core ``streams._extract``) gives, for any records,
the rows and rejections the ordinary decoder (``schemas.decode``) gives, whichever path reads
them: the compiled core, its plain-Python source, or the ordinary path alone."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from types import ModuleType
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from decoders import TRAFFIC_CLASSES
from schemas import SchemaError, epoch_micros, measurement_schema_name
from streams import _columns, _extract
from streams._columns import DOUBLE_FIELDS, MAP_FIELDS, Columns, KeyTable, extract
from tests._source import plain_python
from tests.schemas._samples import sample_records
from tests.schemas._strategies import STRATEGIES

KINDS = ("noise", "air", "traffic", "occupancy")
SCHEMA_OF = {kind: measurement_schema_name(kind) for kind in KINDS}
#: The cores: as imported (compiled after ``make native``), its plain source, and none (the
#: ordinary path alone, gathering into ``array``s as without librt).
CORES: dict[str, ModuleType | None] = {
    "imported": _extract,
    "source": plain_python(_extract),
    "none": None,
}
PROGRAMS = {kind: _columns._programs(kind) for kind in KINDS}
V0 = schemas.all_versions()["NoiseMeasurement.v0"]
AIR_V0 = schemas.all_versions()["AirMeasurement.v0"]


@dataclass
class Record:
    """What ``extract`` reads of an aiokafka ``ConsumerRecord``."""

    key: Any
    value: Any
    offset: int


# --- the reference: schemas.decode, record by record ----------------------------------------------

Row = tuple[int, str, int, tuple[bytes, ...], tuple[Any, ...], tuple[Any, ...]]


def _bits(value: float | None) -> bytes:
    return struct.pack("<d", math.nan if value is None else value)


def reference(records: Sequence[Record], kind: str) -> tuple[list[Row], list[int]]:
    """Rows (sorted by offset) and rejected positions as the ordinary decoder has them."""
    rows: list[Row] = []
    rejected: list[int] = []
    for position, record in enumerate(records):
        try:
            assert isinstance(record.key, bytes | bytearray)
            assert isinstance(record.value, bytes | bytearray | memoryview)
            name, body = schemas.decode(bytes(record.value))
            assert name == SCHEMA_OF[kind]
            assert body["kind"] == kind
            sensor = bytes(record.key).decode()
        except (SchemaError, AssertionError, UnicodeDecodeError):
            rejected.append(position)
            continue
        counts = tuple(
            (
                c["line"],
                ("in", "out").index(c["direction"]),
                TRAFFIC_CLASSES.index(c["traffic_class"]),
                -1 if c["count"] is None else c["count"],
                -1 if c["cumulative"] is None else c["cumulative"],
            )
            for c in body.get("counts", ())
            if c["traffic_class"] in TRAFFIC_CLASSES
        )
        if kind == "traffic" and len(counts) != len(body["counts"]):
            rejected.append(position)
            continue
        regions = tuple((r["region"], r["count"]) for r in body.get("regions", ()))
        doubles = tuple(
            _bits(body["other_values"].get(f) if f == MAP_FIELDS.get(kind) else body[f])
            for f in DOUBLE_FIELDS[kind]
        )
        time_us = epoch_micros(body["observed_at"])
        rows.append((record.offset, sensor, time_us, doubles, counts, regions))
    return sorted(rows), rejected


def rows_of(columns: Columns, keys: KeyTable, kind: str) -> list[Row]:
    """``columns`` as reference rows, sorted by offset; checks the arrays' types and shapes."""
    n = len(columns)
    width = len(DOUBLE_FIELDS[kind])
    assert columns.doubles.shape == (n, width)
    for name, dtype in (
        ("key", np.int32),
        ("time_us", np.int64),
        ("offset", np.int64),
        ("doubles", np.float64),
        ("count_row", np.int32),
        ("count_line", np.int32),
        ("count_direction", np.int8),
        ("count_class", np.int8),
        ("count_value", np.int64),
        ("count_cumulative", np.int64),
        ("region_row", np.int32),
        ("region_id", np.int32),
        ("region_count", np.int64),
    ):
        assert getattr(columns, name).dtype == dtype, name
    assert len(columns.key) == len(columns.time_us) == len(columns.offset) == n
    counts: list[list[Any]] = [[] for _ in range(n)]
    for i, row in enumerate(columns.count_row.tolist()):
        counts[row].append(
            (
                int(columns.count_line[i]),
                int(columns.count_direction[i]),
                int(columns.count_class[i]),
                int(columns.count_value[i]),
                int(columns.count_cumulative[i]),
            )
        )
    regions: list[list[Any]] = [[] for _ in range(n)]
    for i, row in enumerate(columns.region_row.tolist()):
        regions[row].append((int(columns.region_id[i]), int(columns.region_count[i])))
    rows: list[Row] = [
        (
            int(columns.offset[i]),
            keys.name(int(columns.key[i])),
            int(columns.time_us[i]),
            tuple(columns.doubles[i, j].tobytes() for j in range(width)),
            tuple(counts[i]),
            tuple(regions[i]),
        )
        for i in range(n)
    ]
    return sorted(rows)


Extract = Callable[[Sequence[Record], str, KeyTable], Columns]


def _with(core: ModuleType | None) -> Extract:
    def run(records: Sequence[Record], kind: str, keys: KeyTable) -> Columns:
        return _columns._extract_with(core, PROGRAMS[kind], records, kind, keys)

    return run


EXTRACTS: dict[str, Extract] = {name: _with(core) for name, core in CORES.items()}
EXTRACTS["extract"] = extract


def check(run: Extract, records: Sequence[Record], kind: str) -> Columns:
    """``run`` gives the reference's rows and rejections (each with a reason)."""
    keys = KeyTable()
    columns = run(records, kind, keys)
    expected_rows, expected_rejected = reference(records, kind)
    assert rows_of(columns, keys, kind) == expected_rows
    assert [position for position, _ in columns.rejected] == expected_rejected
    assert all(reason for _, reason in columns.rejected)
    return columns


def fast_path_skips(core: ModuleType, records: Sequence[Record], kind: str) -> list[int]:
    """The positions the core leaves to the ordinary path."""
    out = _columns.column_writer(core, kind)
    keys = KeyTable()
    skipped: list[int] = core.extract(
        out,
        list(records),
        kind.encode(),
        PROGRAMS[kind],
        _columns._CLASS_BYTES,
        keys.lookup,
        keys.ids,
    )
    return skipped


FAST_CORES = {"imported": CORES["imported"], "source": CORES["source"]}


# --- programs -------------------------------------------------------------------------------------


def test_every_current_measurement_version_and_the_v0s_have_a_program() -> None:
    for kind in KINDS:
        assert schemas.version(SCHEMA_OF[kind]).fingerprint in PROGRAMS[kind]
    assert V0.fingerprint in PROGRAMS["noise"]
    # Air v0 has no position fields: they read as null (NaN), their default.
    assert AIR_V0.fingerprint in PROGRAMS["air"]
    assert sum(len(p) for p in PROGRAMS.values()) == 6


def test_extract_uses_programs_only_when_the_core_is_compiled() -> None:
    compiled = not _extract.__file__.endswith(".py")
    assert compiled == _columns._COMPILED
    assert bool(_columns._PROGRAMS["noise"]) == compiled


def test_a_program_reads_the_fields_in_the_writers_order() -> None:
    program = PROGRAMS["noise"][schemas.fingerprint("NoiseMeasurement")]
    writer = schemas.schema("NoiseMeasurement")
    assert program[:6] == bytes(
        [
            _extract.OP_STRING,
            _extract.OP_KIND,
            _extract.OP_TIME,
            _extract.OP_MICROS,
            _extract.OP_STRING,
            _extract.OP_BOOLEAN,
        ]
    )
    columns = [op - _extract.OP_DOUBLE for op in program if op >= _extract.OP_DOUBLE]
    names = [f["name"] for f in writer["fields"] if f["name"] in DOUBLE_FIELDS["noise"]]
    assert [DOUBLE_FIELDS["noise"][c] for c in columns] == names
    assert program.count(_extract.OP_MAP_DOUBLE_COLUMN) == 1  # other_values, for la_db
    assert len(program) == len(writer["fields"]) - 1 + 8  # source flattened


def test_unsupported_writer_schemas_have_no_program() -> None:
    current = schemas.schema("NoiseMeasurement")
    fields = current["fields"]
    # A field type programs do not read; an extracted field of another type; no kind field.
    odd = dict(current, fields=[*fields, {"name": "extra", "type": "float"}])
    assert _columns._program(odd, current, "noise") is None
    retyped = [dict(f, type="double") if f["name"] == "laeq_db" else f for f in fields]
    assert _columns._program(dict(current, fields=retyped), current, "noise") is None
    kindless = [f for f in fields if f["name"] != "kind"]
    assert _columns._program(dict(current, fields=kindless), current, "noise") is None
    # A missing double field reads as null (its default): supported.
    fewer = [f for f in fields if f["name"] != "lamin_db"]
    assert _columns._program(dict(current, fields=fewer), current, "noise") is not None


# --- parity ---------------------------------------------------------------------------------------


def _sample_batch(kind: str, count: int = 5) -> list[Record]:
    record = sample_records()[SCHEMA_OF[kind]]
    value = schemas.encode(SCHEMA_OF[kind], record)
    return [Record(f"{record['sensor_id']}-{i % 2}".encode(), value, 100 + i) for i in range(count)]


@pytest.mark.parametrize("run", EXTRACTS.values(), ids=list(EXTRACTS))
@pytest.mark.parametrize("kind", KINDS)
def test_sample_records(run: Extract, kind: str) -> None:
    columns = check(run, _sample_batch(kind), kind)
    assert len(columns) == 5
    assert not columns.rejected
    assert columns.offset.tolist() == [100, 101, 102, 103, 104]


@pytest.mark.parametrize("core", FAST_CORES.values(), ids=list(FAST_CORES))
@pytest.mark.parametrize("kind", KINDS)
def test_sample_records_take_the_fast_path(core: ModuleType, kind: str) -> None:
    assert fast_path_skips(core, _sample_batch(kind), kind) == []


def test_sample_values() -> None:
    keys = KeyTable()
    traffic = extract(_sample_batch("traffic", 1), "traffic", keys)
    assert keys.ids == ["nation-cam-01-0"]
    assert traffic.key.tolist() == [0]
    assert traffic.time_us.tolist() == [
        epoch_micros(sample_records()["NoiseMeasurement"]["observed_at"])
    ]
    assert traffic.doubles.shape == (1, 0)
    assert traffic.count_row.tolist() == [0, 0, 0]
    assert traffic.count_line.tolist() == [1, 1, 2]
    assert traffic.count_direction.tolist() == [0, 1, 0]
    assert [TRAFFIC_CLASSES[c] for c in traffic.count_class] == ["bicycle", "car", "unknown"]
    assert traffic.count_value.tolist() == [12, -1, 0]
    assert traffic.count_cumulative.tolist() == [4012, 77, -1]
    occupancy = extract(_sample_batch("occupancy", 2), "occupancy", keys)
    assert occupancy.key.tolist() == [1, 2]
    assert keys.name(1) == "pool-cam-01-0"
    assert len(keys) == 3
    assert occupancy.region_row.tolist() == [0, 0, 1, 1]
    assert occupancy.region_id.tolist() == [1, 2, 1, 2]
    assert occupancy.region_count.tolist() == [14, 0, 14, 0]
    noise = extract(_sample_batch("noise", 1), "noise", keys)
    assert noise.doubles[0, 0] == 62.4  # laeq_db
    assert noise.doubles[0, 3] == 78.9  # lafmax_db
    assert np.isnan(noise.doubles[0, [1, 2, 4, 5, 6]]).all()
    assert noise.key.tolist() == [3]  # a new key


def _valid(kind: str, record: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """A drawn record made a measurement of ``kind`` (the strategies draw any kind string and
    any traffic class)."""
    record = dict(record, kind=kind)
    if kind == "traffic" and "counts" in record:
        record["counts"] = [
            dict(c, traffic_class=data.draw(st.sampled_from(TRAFFIC_CLASSES)))
            for c in record["counts"]
        ]
    return record


KEYS = st.one_of(
    st.text(max_size=20).map(str.encode),
    st.sampled_from([b"s1", b"s2", "sé-3".encode()]),
)


@pytest.mark.parametrize("name", ["imported", "source"])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_drawn_measurements(name: str, kind: str, data: st.DataObject) -> None:
    """Valid measurements (nulls, empty and long arrays and maps, long strings, negative numbers,
    multi-byte varints) are read by the core, to the ordinary decoder's values."""
    schema = SCHEMA_OF[kind]
    drawn = data.draw(st.lists(STRATEGIES[schema], min_size=1, max_size=4))
    records = [
        Record(data.draw(KEYS), schemas.encode(schema, _valid(kind, r, data)), offset)
        for offset, r in enumerate(drawn, start=data.draw(st.integers(0, 1 << 62)))
    ]
    core = CORES[name]
    assert core is not None
    assert fast_path_skips(core, records, kind) == []
    check(EXTRACTS[name], records, kind)


@pytest.mark.parametrize("name", list(EXTRACTS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_drawn_batches_of_anything(name: str, data: st.DataObject) -> None:
    """Any mix of measurements of any kind (valid or with another kind or traffic class),
    other records, garbage, missing keys and values: the reference's rows and rejections."""
    kind = data.draw(st.sampled_from(KINDS))
    records = []
    for offset in range(data.draw(st.integers(0, 6))):
        schema = data.draw(st.sampled_from(schemas.SCHEMA_NAMES))
        record = data.draw(STRATEGIES[schema])
        if schema in SCHEMA_OF.values() and data.draw(st.booleans()):
            record = _valid(kind if schema == SCHEMA_OF[kind] else record["kind"], record, data)
        header = schemas.version(schema).header
        value = data.draw(
            st.one_of(
                st.just(schemas.encode(schema, record)),
                st.none(),
                st.binary(max_size=30),
                st.binary(max_size=30).map(header.__add__),
            )
        )
        key = data.draw(st.one_of(KEYS, st.none(), st.binary(max_size=5)))
        records.append(Record(key, value, offset))
    check(EXTRACTS[name], records, kind)


@pytest.mark.parametrize("name", list(EXTRACTS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_bodies(name: str, data: st.DataObject) -> None:
    """Truncated, extended or altered bodies: never an exception, the reference's result."""
    kind = data.draw(st.sampled_from(KINDS))
    schema = SCHEMA_OF[kind]
    value = bytearray(schemas.encode(schema, _valid(kind, data.draw(STRATEGIES[schema]), data)))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(10, len(value) - 1))
        change = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if change == "set":
            value[where] = data.draw(st.integers(0, 255))
        elif change == "cut":
            del value[where:]
            if len(value) <= 10:
                break
        else:
            value[where:where] = data.draw(st.binary(min_size=1, max_size=3))
    check(EXTRACTS[name], [Record(b"s1", bytes(value), 7)], kind)


# --- older versions and unusual encodings ---------------------------------------------------------


def _v0_frame(**values: Any) -> bytes:
    record = dict.fromkeys(f["name"] for f in V0.parsed["fields"])
    noise = sample_records()["NoiseMeasurement"]
    record.update({k: v for k, v in noise.items() if k in record}, **values)
    body = BytesIO()
    fastavro.schemaless_writer(body, V0.parsed, record)
    return V0.header + body.getvalue()


@pytest.mark.parametrize("name", list(EXTRACTS))
def test_noise_v0_records(name: str) -> None:
    records = [
        Record(b"old", _v0_frame(), 1),
        Record(b"old", _v0_frame(lamax_db=-3.5, lasmin_db=None, laeq_db=None), 2),
        Record(b"new", _sample_batch("noise", 1)[0].value, 3),
        Record(b"old", _v0_frame(kind="air"), 4),
    ]
    columns = check(EXTRACTS[name], records, "noise")
    assert len(columns) == 3
    assert columns.rejected == ((3, "wrong kind 'air'"),)


@pytest.mark.parametrize("core", FAST_CORES.values(), ids=list(FAST_CORES))
def test_noise_v0_records_take_the_fast_path(core: ModuleType) -> None:
    records = [
        Record(b"old", _v0_frame(), 1),
        Record(b"new", _sample_batch("noise", 1)[0].value, 2),
    ]
    assert fast_path_skips(core, records * 2, "noise") == []


def _zigzag(n: int) -> bytes:
    out = bytearray()
    z = (n << 1) ^ (n >> 63)
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _blocked_traffic() -> bytes:
    """A traffic frame whose counts come in two blocks, the first with a negative count and a
    byte size, as the Avro specification allows (the encoder writes one block)."""
    record = sample_records()["TrafficMeasurement"]
    counts = record["counts"]
    items_schema = schemas.schema("TrafficMeasurement")["fields"][10]["type"]["items"]
    items = []
    for count in counts:
        body = BytesIO()
        fastavro.schemaless_writer(body, items_schema, count)
        items.append(body.getvalue())
    empty = schemas.encode("TrafficMeasurement", dict(record, counts=[]))
    source_schema = schemas.schema("TrafficMeasurement")["fields"][11]["type"]
    source = BytesIO()
    fastavro.schemaless_writer(source, source_schema, record["source"])
    head = empty[: -(len(source.getvalue()) + 1)]
    assert empty == head + b"\x00" + source.getvalue()
    first = items[0] + items[1]
    blocks = _zigzag(-2) + _zigzag(len(first)) + first + _zigzag(1) + items[2] + b"\x00"
    frame = head + blocks + source.getvalue()
    assert schemas.decode(frame) == schemas.decode(schemas.encode("TrafficMeasurement", record))
    return frame


@pytest.mark.parametrize("name", list(EXTRACTS))
def test_unusual_encodings(name: str) -> None:
    value = _sample_batch("noise", 1)[0].value
    sensor = value.index(b"nation-noise-07") - 1
    # The sensor id's length as a 2-byte varint, and a 10-byte varint for a long: valid Avro.
    long_length = value[:sensor] + bytes([value[sensor] | 0x80, 0]) + value[sensor + 1 :]
    observed = sensor + 1 + len("nation-noise-07") + 1 + len("noise")
    end = observed
    while value[end] & 0x80:
        end += 1
    padded = bytearray(value[observed : end + 1])
    padded[-1] |= 0x80
    padded += b"\x80" * (9 - len(padded)) + b"\x00"
    long_varint = value[:observed] + bytes(padded) + value[end + 1 :]
    assert schemas.decode(long_varint) == schemas.decode(value)
    records = [Record(b"a", long_length, 1), Record(b"b", long_varint, 2)]
    columns = check(EXTRACTS[name], records, "noise")
    assert len(columns) == 2
    traffic = check(EXTRACTS[name], [Record(b"t", _blocked_traffic(), 5)], "traffic")
    assert traffic.count_class.tolist() == [1, 3, 6]


@pytest.mark.parametrize("core", FAST_CORES.values(), ids=list(FAST_CORES))
def test_blocked_arrays_take_the_fast_path(core: ModuleType) -> None:
    assert fast_path_skips(core, [Record(b"t", _blocked_traffic(), 5)], "traffic") == []


# --- rejections -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXTRACTS))
def test_rejections_and_their_reasons(name: str) -> None:
    noise = sample_records()["NoiseMeasurement"]
    good = schemas.encode("NoiseMeasurement", noise)
    traffic = sample_records()["TrafficMeasurement"]
    odd_class = dict(traffic, counts=[dict(traffic["counts"][0], traffic_class="tram")])
    records = [
        Record(b"k", good, 0),
        Record(None, good, 1),
        Record(b"k", None, 2),
        Record(b"k", good[:-3], 3),
        Record(b"k", b"garbage", 4),
        Record(b"k", schemas.encode("NoiseMeasurement", dict(noise, kind="air")), 5),
        Record(b"k", schemas.encode("AirMeasurement", sample_records()["AirMeasurement"]), 6),
        Record(b"\xff", good, 7),
        Record(b"k", good + b"\x00", 8),
        Record(b"k", b"\xc3\x01" + bytes(8) + good[10:], 9),
        Record("k", good, 10),
        Record(bytearray(b"k"), good, 11),
        Record(b"k", memoryview(good), 12),
    ]
    columns = check(EXTRACTS[name], records, "noise")
    assert sorted(columns.offset.tolist()) == [0, 11, 12]
    reasons = dict(columns.rejected)
    assert reasons[1] == "no key"
    assert reasons[2] == "no value"
    assert reasons[3].startswith("undecodable: ")
    assert reasons[4].startswith("undecodable: ")
    assert reasons[5] == "wrong kind 'air'"
    assert reasons[6] == "wrong schema AirMeasurement"
    assert reasons[7] == "key is not UTF-8: b'\\xff'"
    assert "trailing bytes" in reasons[8]
    assert "unknown schema fingerprint" in reasons[9]
    assert reasons[10] == "key is not bytes but str"
    rejected = check(
        EXTRACTS[name],
        [Record(b"c", schemas.encode("TrafficMeasurement", odd_class), 0)],
        "traffic",
    )
    assert rejected.rejected == ((0, "unknown traffic class 'tram'"),)


def test_an_unknown_kind_raises() -> None:
    with pytest.raises(SchemaError):
        extract([], "weather", KeyTable())


@pytest.mark.parametrize("kind", KINDS)
def test_no_records(kind: str) -> None:
    columns = extract((), kind, KeyTable())
    assert len(columns) == 0
    assert columns.doubles.shape == (0, len(DOUBLE_FIELDS[kind]))
    assert columns.rejected == ()


def test_key_table() -> None:
    keys = KeyTable()
    assert keys.index(b"a") == 0
    assert keys.index(b"b") == 1
    assert keys.index(b"a") == 0
    assert keys.name(1) == "b"
    assert len(keys) == 2
    assert keys.lookup == {b"a": 0, b"b": 1}
    with pytest.raises(UnicodeDecodeError):
        keys.index(b"\xff")
    assert len(keys) == 2


@pytest.mark.parametrize("name", sorted(EXTRACTS))
def test_a_spot_level_in_other_values_fills_the_la_db_column(name: str) -> None:
    record = dict(sample_records()["NoiseMeasurement"])
    record["other_values"] = {"x": 1.0, "la_db": 61.2, "lz_db": 70.0}
    record["laeq_db"] = None
    records = [Record(b"n1", schemas.encode("NoiseMeasurement", record), 0)]
    columns = check(EXTRACTS[name], records, "noise")
    assert columns.doubles[0, DOUBLE_FIELDS["noise"].index("la_db")] == 61.2
    assert math.isnan(columns.doubles[0, 0])
    if name != "none":  # the cores read it themselves, not through the ordinary path
        core = CORES["imported" if name in ("imported", "extract") else name]
        assert core is not None
        assert fast_path_skips(core, records, "noise") == []
