"""The compiled encoders behind ``schemas.encode`` against fastavro, the reference.

For random records of every current schema, drawn from the parsed schema itself: the compiled
encoder writes exactly fastavro's bytes, and the record reads back. A record with one wrong value
or one required field missing is a ``SchemaError`` naming that field. Whatever the compiled
encoder accepts, fastavro accepts and writes the same bytes (it accepts more, see the module
docstring of ``schemas._encoder``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from io import BytesIO
from typing import Any

import fastavro
import pytest
from fastavro import parse_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from schemas import SchemaError
from schemas._avro import HIGH_VARINTS as _HIGH_VARINTS
from schemas._avro import HIGH_VARINTS_SIZE as _HIGH_VARINTS_SIZE
from schemas._encoder import (
    EncodeError,
    UnsupportedSchemaError,
    compile_encoder,
    epoch_micros,
)
from schemas._framing import _ENCODERS
from tests.schemas._samples import sample_records
from tests.schemas._strategies import (
    EPOCH,
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    STRATEGIES,
    expected_read,
    same,
)

NAMES = schemas.SCHEMA_NAMES

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fastavro_body(name: str, record: Any) -> bytes:
    body = BytesIO()
    fastavro.schemaless_writer(body, schemas.schema(name), record)
    return body.getvalue()


def compiled_body(name: str, record: Any) -> bytes:
    out = bytearray()
    _ENCODERS[name](record, out)
    return bytes(out)


# --- properties -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_current_schema_is_compiled(name: str) -> None:
    """A schema change that the compiler cannot handle would silently fall back to fastavro."""
    compile_encoder(schemas.schema(name))  # raises UnsupportedSchemaError if not
    assert _ENCODERS[name].__qualname__ == "encode"  # not _fastavro_encoder.<locals>.encode


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_compiled_bytes_are_fastavro_bytes(name: str, data: st.DataObject) -> None:
    record = data.draw(STRATEGIES[name])
    assert compiled_body(name, record) == fastavro_body(name, record)


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_encode_then_decode_round_trips(name: str, data: st.DataObject) -> None:
    record = data.draw(STRATEGIES[name])
    frame = schemas.encode(name, record)
    assert frame[:10] == schemas.version(name).header
    decoded_name, decoded = schemas.decode(frame)
    assert decoded_name == name
    parsed = schemas.schema(name)
    assert same(decoded, expected_read(parsed, parsed["__named_schemas"], record))
    assert schemas.encode(name, decoded) == frame


# --- invalid records ------------------------------------------------------------------------------

NAIVE = datetime(2024, 6, 21, 12, 0)  # noqa: DTZ001  (a naive datetime is the point)


def wrong_values(schema: Any, named: dict[str, Any], in_union: bool = False) -> list[Any]:
    """Values the field's type must refuse (fastavro takes several of them)."""
    if isinstance(schema, list):
        (other,) = (branch for branch in schema if branch != "null")
        return wrong_values(other, named, in_union=True)
    if isinstance(schema, str) and schema in named:
        return wrong_values(named[schema], named, in_union)
    nulls = [] if in_union else [None]
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros":
            return [*nulls, NAIVE, "2024-06-21T12:00:00Z", 1.5, date(2024, 6, 21), LONG_MAX + 1]
        kind = schema["type"]
        if kind == "record":
            return [*nulls, [1], "record", 3]
        if kind == "enum":
            return [*nulls, "sideways", 0, b"in"]
        if kind == "array":
            return [*nulls, "abc", {"a": 1}, 5, *([(1,)] if in_union else [])]
        if kind == "map":
            return [*nulls, [("a", 1.0)], "map", {1: 1.0}]
        schema = kind
    return [
        *nulls,
        *{
            "boolean": [1, 0, "true", 1.0],
            "int": [1.0, "1", True, INT_MAX + 1, INT_MIN - 1, b"\x01"],
            "long": [1.7, "1", False, LONG_MAX + 1, LONG_MIN - 1],
            "double": ["1.5", True, b"1", 10**400, complex(1, 0)],
            "string": [b"abc", 1, "\ud800", ["a"]],
            "bytes": ["abc", 1, memoryview(b"x"), [1]],
        }[schema],
    ]


def leaf_fields(schema: Any, named: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(path, type) of every field reachable through records, not through arrays or maps."""
    leaves = []
    for field in schema["fields"]:
        path = f"{prefix}{field['name']}"
        leaves.append((path, field))
        field_type = (
            named.get(field["type"], field["type"])
            if isinstance(field["type"], str)
            else field["type"]
        )
        if isinstance(field_type, dict) and field_type["type"] == "record":
            leaves += leaf_fields(field_type, named, f"{path}.")
    return leaves


def replaced(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    copy = dict(record)
    copy[head] = replaced(dict(copy[head]), rest, value) if rest else value
    return copy


def without(record: dict[str, Any], path: str) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    copy = dict(record)
    if rest:
        copy[head] = without(dict(copy[head]), rest)
    else:
        copy.pop(head, None)
    return copy


SAMPLES = sample_records()
CASES = [
    (name, path, field)
    for name in NAMES
    for path, field in leaf_fields(schemas.schema(name), schemas.schema(name)["__named_schemas"])
]


@pytest.mark.parametrize(("name", "path", "field"), CASES, ids=[f"{n}.{p}" for n, p, _ in CASES])
def test_a_wrong_value_is_a_schema_error_naming_the_field(
    name: str, path: str, field: dict[str, Any]
) -> None:
    named = schemas.schema(name)["__named_schemas"]
    for value in wrong_values(field["type"], named):
        record = replaced(SAMPLES[name], path, value)
        with pytest.raises(
            SchemaError,
            match=rf"^{name}: record does not match the schema: field {re.escape(path)}(: |\[)",
        ) as info:
            schemas.encode(name, record)
        assert isinstance(info.value.__cause__, EncodeError)
        assert info.value.__cause__.path.startswith(path)


@pytest.mark.parametrize(("name", "path", "field"), CASES, ids=[f"{n}.{p}" for n, p, _ in CASES])
def test_a_missing_field_takes_its_default_or_is_an_error(
    name: str, path: str, field: dict[str, Any]
) -> None:
    record = without(SAMPLES[name], path)
    optional = "default" in field or (isinstance(field["type"], list) and "null" in field["type"])
    if optional:
        assert compiled_body(name, record) == fastavro_body(name, record)
    else:
        with pytest.raises(
            SchemaError, match=rf"field {path}: missing, and the field has no default"
        ):
            schemas.encode(name, record)
        with pytest.raises(
            ValueError, match=f"no value and no default for {path.rpartition('.')[2]}"
        ):
            fastavro_body(name, record)


def test_errors_inside_arrays_and_maps_name_the_item() -> None:
    traffic = dict(SAMPLES["TrafficMeasurement"])
    traffic["counts"] = [dict(count) for count in traffic["counts"]]
    traffic["counts"][2]["direction"] = "up"
    with pytest.raises(
        SchemaError,
        match=r"field counts\[2\]\.direction: expected one of \['in', 'out'\], got str 'up'",
    ):
        schemas.encode("TrafficMeasurement", traffic)
    traffic["counts"][2] = "not a record"
    with pytest.raises(SchemaError, match=r"field counts\[2\]: expected a record, got str"):
        schemas.encode("TrafficMeasurement", traffic)
    noise = dict(SAMPLES["NoiseMeasurement"], other_values={"la90_db": 1.0, "x_db": "loud"})
    with pytest.raises(
        SchemaError, match=r"field other_values\['x_db'\]: expected double, got str 'loud'"
    ):
        schemas.encode("NoiseMeasurement", noise)
    noise["other_values"] = {7: 1.0}
    with pytest.raises(
        SchemaError, match=r"field other_values\[7\]: expected a string key, got int 7"
    ):
        schemas.encode("NoiseMeasurement", noise)


def test_a_record_that_is_not_a_mapping_is_a_schema_error() -> None:
    with pytest.raises(
        SchemaError,
        match=r"^DeadLetter: record does not match the schema: expected a record, got list",
    ):
        schemas.encode("DeadLetter", [1, 2])  # type: ignore[arg-type]


def test_a_naive_datetime_is_refused_where_fastavro_takes_local_time() -> None:
    record = dict(SAMPLES["DeadLetter"], received_at=NAIVE)
    fastavro_body("DeadLetter", record)  # fastavro writes it, shifted by the host's zone
    with pytest.raises(SchemaError, match="field received_at: expected a timezone-aware datetime"):
        schemas.encode("DeadLetter", record)


# --- the encoder never writes what fastavro would not ---------------------------------------------

ODD_VALUES = st.sampled_from(
    [
        None, True, False, 0, 1, -1, 64, 2**31, 2**63, -(2**63) - 1, 1.5, float("nan"), 10**400,
        "", "in", "out", "x" * 70, "\ud800", b"", b"bytes", bytearray(b"ba"), memoryview(b"m"),
        [], [1], (), (1, 2), {}, {"a": 1.0}, {"a": "b"}, OrderedDict(a=1.0), {1: 2.0},
        NAIVE, datetime(2024, 1, 1, tzinfo=UTC), date(2024, 1, 1), Fraction(1, 3),
        ("double", 1.0), ("string", "tuple notation"),
    ]
)  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_what_the_encoder_accepts_fastavro_writes_identically(
    name: str, data: st.DataObject
) -> None:
    record = data.draw(STRATEGIES[name])
    fields = leaf_fields(schemas.schema(name), schemas.schema(name)["__named_schemas"])
    for path, _ in data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3)):
        parent = path.split(".")[0]
        if "." not in path or isinstance(record.get(parent), dict):
            record = replaced(record, path, data.draw(ODD_VALUES))
    try:
        ours = compiled_body(name, record)
    except EncodeError:
        return
    assert ours == fastavro_body(name, record)


# --- varints and the other corners ----------------------------------------------------------------


def parsed_record(raw: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_schema(raw)
    assert isinstance(parsed, dict)
    return parsed


LONG_SCHEMA = parsed_record(
    {
        "type": "record",
        "name": "Longs",
        "fields": [
            {"name": "long", "type": "long"},
            {"name": "int", "type": "int"},
            {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "nullable", "type": ["long", "null"]},
        ],
    }
)
LONG_ENCODER = compile_encoder(LONG_SCHEMA)


def _long_edges() -> list[int]:
    edges = {0, 1, -1, LONG_MIN, LONG_MAX, INT_MIN, INT_MAX}
    for bits in range(1, 64):
        for value in ((1 << bits) - 1, 1 << bits, -(1 << bits), -(1 << bits) - 1):
            if LONG_MIN <= value <= LONG_MAX:
                edges.add(value)
    return sorted(edges)


@pytest.mark.parametrize("value", _long_edges())
def test_varints_at_every_length_boundary(value: int) -> None:
    as_int = value if INT_MIN <= value <= INT_MAX else 0
    record = {"long": value, "int": as_int, "time": value, "nullable": value}
    out = bytearray()
    LONG_ENCODER(record, out)
    body = BytesIO()
    fastavro.schemaless_writer(body, LONG_SCHEMA, record)
    assert bytes(out) == body.getvalue()


def test_high_group_cache_is_bounded_and_stays_correct() -> None:
    start = 1_700_000_000_000_000
    for step in range(_HIGH_VARINTS_SIZE + 10):
        micros = start + step * (1 << 28)
        record = {"long": micros, "int": 0, "time": micros, "nullable": None}
        out = bytearray()
        LONG_ENCODER(record, out)
        body = BytesIO()
        fastavro.schemaless_writer(body, LONG_SCHEMA, record)
        assert bytes(out) == body.getvalue()
        assert len(_HIGH_VARINTS) <= _HIGH_VARINTS_SIZE


@pytest.mark.parametrize(
    "field_type",
    [
        "float",
        {"type": "fixed", "name": "F", "size": 2},
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "int", "logicalType": "date"},
        {"type": "string", "logicalType": "uuid"},
        {"type": "long", "logicalType": "timestamp-millis"},
        ["null", {"type": "record", "name": "Inner", "fields": []}],
    ],
)
def test_types_outside_the_subset_are_left_to_fastavro(field_type: Any) -> None:
    parsed = parsed_record(
        {"type": "record", "name": "Other", "fields": [{"name": "f", "type": field_type}]}
    )
    with pytest.raises(UnsupportedSchemaError):
        compile_encoder(parsed)


def test_unsupported_schema_falls_back_to_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import _framing

    loaded = schemas.version("DeadLetter")

    def unsupported(parsed: Any) -> Any:
        raise UnsupportedSchemaError("pretend")

    monkeypatch.setattr(_framing, "compile_encoder", unsupported)
    encoder = _framing._encoder(loaded)
    out = bytearray()
    encoder(SAMPLES["DeadLetter"], out)
    assert bytes(out) == fastavro_body("DeadLetter", SAMPLES["DeadLetter"])
    with pytest.raises(SchemaError, match="DeadLetter: record does not match the schema"):
        encoder(dict(SAMPLES["DeadLetter"], payload=5), bytearray())


def test_epoch_micros() -> None:
    assert epoch_micros(EPOCH) == 0
    assert epoch_micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    paris = timezone(timedelta(hours=2))
    assert epoch_micros(datetime(1970, 1, 1, 2, 0, 0, 1, tzinfo=paris)) == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        epoch_micros(NAIVE)


def test_int_timestamps_skip_the_datetime_but_write_the_same_bytes() -> None:
    record = SAMPLES["LateRecord"]
    as_ints = {
        key: epoch_micros(value) if isinstance(value, datetime) else value
        for key, value in record.items()
    }
    assert schemas.encode("LateRecord", as_ints) == schemas.encode("LateRecord", record)
