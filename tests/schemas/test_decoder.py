"""The compiled decoders behind ``schemas.decode`` against fastavro's reader, the reference.

For random records of every loaded version (current ones, and kept ones read with the current
version): the compiled decoder returns exactly what ``fastavro.schemaless_reader`` returns for
the same bytes (same keys in the same order, same types, NaN for NaN), also for valid encodings
fastavro's writer never produces (padded varints, arrays and maps in several blocks, blocks with
a byte size). Random and mutated bodies raise nothing but ``SchemaError`` through the framing;
whatever the compiled decoder accepts, fastavro reads the same; whatever fastavro reads and the
decoder refuses is not a canonical encoding (see the module docstring of ``schemas._decoder``).
"""

from __future__ import annotations

import math
import struct
from datetime import datetime
from io import BytesIO
from typing import Any, cast

import fastavro
import pytest
from fastavro import parse_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from schemas import SchemaError, SchemaVersion, epoch_micros
from schemas._decoder import (
    DecodeError,
    UnsupportedSchemaError,
    compile_decoder,
    compile_tuple_decoder,
)
from schemas._encoder import EncodeError, compile_encoder
from schemas._framing import _READERS, _decoder, _fastavro_decoder, micros_decoder
from tests.schemas._samples import sample_records
from tests.schemas._strategies import EPOCH, records

VERSIONS = schemas.all_versions()
LABELS = list(VERSIONS)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GARBAGE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: What a compiled decoder may raise on a malformed body; the framing makes them SchemaError.
MALFORMED = (DecodeError, IndexError, struct.error, UnicodeDecodeError, OverflowError)


def reader_schema(label: str) -> dict[str, Any] | None:
    loaded = VERSIONS[label]
    return None if loaded.current else schemas.schema(loaded.name)


def fastavro_read(writer: Any, reader: Any, body: bytes) -> tuple[Any, int]:
    stream = BytesIO(body)
    return fastavro.schemaless_reader(stream, writer, reader), stream.tell()


def fastavro_write(writer: Any, record: Any) -> bytes:
    body = BytesIO()
    fastavro.schemaless_writer(body, writer, record)
    return body.getvalue()


def identical(a: Any, b: Any) -> bool:
    """Equal, with the same types, dict keys in the same order, NaN equal to NaN, -0.0 apart
    from 0.0, and datetimes in the same zone."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        return a == b and a.tzinfo is b.tzinfo
    return bool(a == b)


def version_strategy(label: str) -> st.SearchStrategy[dict[str, Any]]:
    parsed = VERSIONS[label].parsed
    strategy: st.SearchStrategy[dict[str, Any]] = records(parsed, parsed["__named_schemas"])
    return strategy


VERSION_STRATEGIES = {label: version_strategy(label) for label in LABELS}


# --- a writer of valid encodings fastavro's writer never produces --------------------------------


def _varint(value: int, padding: int) -> bytes:
    """The zig-zag varint of ``value``, with ``padding`` redundant bytes (at most 10 in all)."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    padding = min(padding, 10 - len(out))
    if padding > 0:
        out[-1] |= 0x80
        out += b"\x80" * (padding - 1) + b"\x00"
    return bytes(out)


class OddWriter:
    """Writes a value the way another Avro implementation may: every choice drawn."""

    def __init__(self, data: st.DataObject, named: dict[str, Any]) -> None:
        self.data = data
        self.named = named

    def varint(self, value: int) -> bytes:
        return _varint(value, self.data.draw(st.sampled_from([0, 0, 0, 1, 2, 9])))

    def blocks(self, items: list[Any], write_item: Any) -> bytes:
        out = bytearray()
        rest = list(items)
        while rest:
            size = self.data.draw(st.integers(1, len(rest)))
            block, rest = rest[:size], rest[size:]
            encoded = b"".join(write_item(item) for item in block)
            if self.data.draw(st.booleans()):
                out += self.varint(-len(block)) + self.varint(len(encoded))
            else:
                out += self.varint(len(block))
            out += encoded
        return bytes(out + self.varint(0))

    def write(self, schema: Any, value: Any) -> bytes:
        if isinstance(schema, list):
            index = schema.index("null") if value is None else 1 - schema.index("null")
            return self.varint(index) + self.write(schema[index], value)
        if isinstance(schema, str) and schema in self.named:
            return self.write(self.named[schema], value)
        if isinstance(schema, dict):
            if schema.get("logicalType") == "timestamp-micros":
                micros = value if isinstance(value, int) else epoch_micros(value)
                return self.varint(micros)
            kind = schema["type"]
            if kind == "record":
                return b"".join(
                    self.write(f["type"], value.get(f["name"], f.get("default")))
                    for f in schema["fields"]
                )
            if kind == "enum":
                return self.varint(schema["symbols"].index(value))
            if kind == "array":
                return self.blocks(list(value), lambda item: self.write(schema["items"], item))
            if kind == "map":
                return self.blocks(
                    list(value.items()),
                    lambda item: (
                        self.write("string", item[0]) + self.write(schema["values"], item[1])
                    ),
                )
            schema = kind
        if schema == "null":
            return b""
        if schema == "boolean":
            return b"\x01" if value else b"\x00"
        if schema in ("int", "long"):
            return self.varint(value)
        if schema == "float":
            return struct.pack("<f", value)
        if schema == "double":
            return struct.pack("<d", float(value))
        raw = value.encode() if schema == "string" else bytes(value)
        return self.varint(len(raw)) + raw


# --- every loaded version is compiled -----------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_every_version_is_compiled(label: str) -> None:
    """A schema change the compiler cannot handle would silently fall back to fastavro."""
    compile_decoder(VERSIONS[label].parsed, reader_schema(label))  # raises if unsupported
    name, reader_label, decoder = _READERS[label]
    assert (name, reader_label) == (VERSIONS[label].name, label)
    assert decoder.__qualname__ == "decode"  # not _fastavro_decoder.<locals>.decode


# --- valid records ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
@PROPERTY
@given(data=st.data())
def test_compiled_read_is_fastavro_read(label: str, data: st.DataObject) -> None:
    writer = VERSIONS[label].parsed
    body = fastavro_write(writer, data.draw(VERSION_STRATEGIES[label]))
    expected, expected_end = fastavro_read(writer, reader_schema(label), body)
    record, end = _READERS[label][2](body, 0)
    assert end == expected_end == len(body)
    assert identical(record, expected)
    name, framed = schemas.decode(VERSIONS[label].header + body)
    assert name == VERSIONS[label].name
    assert identical(framed, record)


@pytest.mark.parametrize("label", LABELS)
@PROPERTY
@given(data=st.data())
def test_non_canonical_encodings_read_as_fastavro_reads_them(
    label: str, data: st.DataObject
) -> None:
    writer = VERSIONS[label].parsed
    record = data.draw(VERSION_STRATEGIES[label])
    body = OddWriter(data, writer["__named_schemas"]).write(writer, record)
    expected, expected_end = fastavro_read(writer, reader_schema(label), body)
    assert expected_end == len(body)
    decoded, end = _READERS[label][2](body, 0)
    assert end == len(body)
    assert identical(decoded, expected)


def test_timestamps_are_aware_utc_datetimes() -> None:
    record = dict(_sample("DeadLetter"), received_at=-1)
    _, decoded = schemas.decode(schemas.encode("DeadLetter", record))
    assert decoded["received_at"] == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=EPOCH.tzinfo)
    assert decoded["received_at"].tzinfo is EPOCH.tzinfo
    assert type(decoded["payload"]) is bytes


def _sample(name: str) -> dict[str, Any]:
    return sample_records()[name]


# --- malformed bodies ---------------------------------------------------------------------------


def _mutations(body: bytes) -> st.SearchStrategy[bytes]:
    positions = st.integers(0, len(body))
    return st.one_of(
        positions.map(lambda cut: body[:cut]),
        st.tuples(positions, st.integers(0, 255)).map(
            lambda m: body[: m[0]] + bytes([m[1]]) + body[m[0] + 1 :]
        ),
        st.tuples(positions, st.binary(min_size=1, max_size=12)).map(
            lambda m: body[: m[0]] + m[1] + body[m[0] :]
        ),
        st.tuples(positions, st.integers(1, 12)).map(lambda m: body[: m[0]] + body[m[0] + m[1] :]),
        st.tuples(
            positions, st.sampled_from([b"\x01", b"\x7f", b"\xff" * 11, b"\x81\x80\x80"])
        ).map(lambda m: body[: m[0]] + m[1] + body[m[0] + len(m[1]) :]),
    )


def _canonical(label: str, record: Any) -> bytes | None:
    """The encoding the (strict) compiled encoder gives a record fastavro read as written."""
    try:
        out = bytearray()
        compile_encoder(VERSIONS[label].parsed)(record, out)
    except EncodeError:
        return None
    return bytes(out)


def check_body(label: str, body: bytes) -> None:
    loaded = VERSIONS[label]
    writer = loaded.parsed
    try:
        record, end = _READERS[label][2](body, 0)
    except MALFORMED:
        with pytest.raises(SchemaError, match=f"not a valid {label} record"):
            schemas.decode(loaded.header + body)
        try:
            as_written, fastavro_end = fastavro_read(writer, None, body)
        except Exception:  # fastavro refuses it too, any way it likes
            return
        # fastavro read what the decoder refuses: it must not be a canonical encoding.
        assert _canonical(label, as_written) != body[:fastavro_end]
        return
    # Whatever the decoder accepts, fastavro reads the same.
    expected, expected_end = fastavro_read(writer, reader_schema(label), body)
    assert end == expected_end
    assert identical(record, expected)
    if end == len(body):
        name, framed = schemas.decode(loaded.header + body)
        assert name == loaded.name
        assert identical(framed, record)
    else:
        with pytest.raises(SchemaError, match=f"{len(body) - end} trailing bytes"):
            schemas.decode(loaded.header + body)


@pytest.mark.parametrize("label", LABELS)
@GARBAGE
@given(data=st.data())
def test_mutated_bodies_raise_only_schema_errors(label: str, data: st.DataObject) -> None:
    body = fastavro_write(VERSIONS[label].parsed, data.draw(VERSION_STRATEGIES[label]))
    for _ in range(data.draw(st.integers(1, 3))):
        body = data.draw(_mutations(body))
    check_body(label, body)


@pytest.mark.parametrize("label", LABELS)
@GARBAGE
@given(body=st.binary(max_size=300))
def test_random_bodies_raise_only_schema_errors(label: str, body: bytes) -> None:
    check_body(label, body)


@pytest.mark.parametrize("label", LABELS)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_every_truncation_is_a_schema_error(label: str, data: st.DataObject) -> None:
    body = fastavro_write(VERSIONS[label].parsed, data.draw(VERSION_STRATEGIES[label]))
    for cut in range(len(body)):
        with pytest.raises(SchemaError):
            schemas.decode(VERSIONS[label].header + body[:cut])


# --- malformed encodings, one by one ------------------------------------------------------------


def _parsed(schema: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], parse_schema(schema))


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return _parsed(
        {"type": "record", "name": "R", "fields": [{"name": n, "type": t} for n, t in fields]}
    )


ENUM = {"type": "enum", "name": "E", "symbols": ["in", "out"]}
TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
MALFORMED_CASES = [
    # (field type, body, error, fastavro's reading when it reads it)
    ("boolean", b"\x02", "boolean byte 0x02", {"f": True}),
    ("int", b"\x80\x80\x80\x80\x10", "int 2147483648 outside 32 bits", {"f": 2**31}),
    ("long", b"\x80" * 10 + b"\x01", "varint longer than 10 bytes", {"f": 32}),
    ("long", b"\xff" * 9 + b"\x7f", "varint beyond 64 bits", {"f": -(2**63)}),
    (ENUM, b"\x01", "enum symbol index -1 not in [0, 2)", {"f": "out"}),
    (ENUM, b"\x04", "enum symbol index 2 not in [0, 2)", None),
    (["null", "double"], b"\x01" + bytes(8), "union branch index -1 not in [0, 2)", {"f": 0.0}),
    (["null", "double"], b"\x84\x00", "union branch index 2 not in [0, 2)", None),
    ("string", b"\x03ab", "negative length -2", None),
    ("string", b"\x0aab", "length beyond the end", None),
    ("bytes", b"\x81\x01ab", "negative length -65", None),
    ({"type": "map", "values": "double"}, b"\xfe\xff\xff\xff\x0f", "block of", None),
    ({"type": "array", "items": "long"}, b"\xff\xff\x03\x00", "block of 32768 items", None),
    ("string", b"\x02\xff", None, None),  # UnicodeDecodeError
    (TIMESTAMP, b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", None, None),  # OverflowError
    ("double", b"\x00" * 7, None, None),  # struct.error
    ("long", b"", None, None),  # IndexError
]


@pytest.mark.parametrize(("field_type", "body", "error", "fastavro_reads"), MALFORMED_CASES)
def test_malformed_encodings_are_errors(
    field_type: Any, body: bytes, error: str | None, fastavro_reads: dict[str, Any] | None
) -> None:
    schema = _record(("f", field_type))
    decoder = compile_decoder(schema)
    with pytest.raises(MALFORMED) as info:
        decoder(body, 0)
    if error is not None:
        assert isinstance(info.value, DecodeError)
        assert error in str(info.value)
    if fastavro_reads is not None:  # fastavro reads it anyway: the documented differences
        assert fastavro_read(schema, None, body)[0] == fastavro_reads


def test_framing_errors_say_what_is_wrong() -> None:
    frame = schemas.encode("DeadLetter", _sample("DeadLetter"))
    body = frame[10:]
    with pytest.raises(SchemaError, match=r"not a valid DeadLetter record: truncated"):
        schemas.decode(frame[:-1])
    bad_utf8 = frame[:10] + body[:1] + b"\xff" + body[2:]  # first byte of original_topic
    with pytest.raises(SchemaError, match=r"not a valid DeadLetter record: a string is not UTF-8"):
        schemas.decode(bad_utf8)
    with pytest.raises(SchemaError, match="3 trailing bytes after the DeadLetter record"):
        schemas.decode(frame + b"abc")
    as_memoryview = schemas.decode(memoryview(frame))  # type: ignore[arg-type]
    assert as_memoryview == ("DeadLetter", _sample("DeadLetter"))
    assert type(as_memoryview[1]["payload"]) is bytes


# --- schema resolution --------------------------------------------------------------------------

SOURCE = {
    "type": "record",
    "name": "Source",
    "fields": [{"name": "network", "type": ["null", "string"], "default": None}],
}
WRITER = _parsed(
    {
        "type": "record",
        "name": "Old",
        "namespace": "test",
        "fields": [
            {"name": "kept", "type": "string"},
            {"name": "to_long", "type": "int"},
            {"name": "to_double", "type": "int"},
            {"name": "long_to_float", "type": "long"},
            {"name": "float_to_double", "type": "float"},
            {"name": "string_to_bytes", "type": "string"},
            {"name": "bytes_to_string", "type": "string"},
            {"name": "old_name", "type": ["null", "double"]},
            {"name": "direction", "type": ENUM},
            {"name": "when", "type": TIMESTAMP},
            {"name": "source", "type": SOURCE},
            {"name": "gone_string", "type": "string"},
            {"name": "gone_bytes", "type": "bytes"},
            {"name": "gone_bool", "type": "boolean"},
            {"name": "gone_float", "type": "float"},
            {"name": "gone_double", "type": "double"},
            {"name": "gone_enum", "type": {"type": "enum", "name": "G", "symbols": ["a", "b"]}},
            {"name": "gone_union", "type": ["string", "null"]},
            {"name": "gone_time", "type": TIMESTAMP},
            {"name": "gone_map", "type": {"type": "map", "values": ["null", "string"]}},
            {"name": "gone_array", "type": {"type": "array", "items": "Source"}},
            {"name": "gone_record", "type": "Source"},
            {"name": "counts", "type": {"type": "array", "items": "int"}},
            {"name": "values", "type": {"type": "map", "values": "long"}},
        ],
    }
)
READER = _parsed(
    {
        "type": "record",
        "name": "New",
        "namespace": "test",
        "aliases": ["test.Old"],
        "fields": [
            {"name": "added_null", "type": ["null", "string"], "default": None},
            {"name": "values", "type": {"type": "map", "values": "double"}},
            {"name": "kept", "type": "string"},
            {"name": "source", "type": {**SOURCE, "doc": "now documented"}},
            {"name": "to_long", "type": "long"},
            {"name": "to_double", "type": "double"},
            {"name": "long_to_float", "type": "float"},
            {"name": "float_to_double", "type": "double"},
            {"name": "string_to_bytes", "type": "bytes"},
            {"name": "bytes_to_string", "type": "string"},
            {"name": "new_name", "type": ["null", "double"], "aliases": ["old_name"]},
            {
                "name": "direction",
                "type": {"type": "enum", "name": "E", "symbols": ["in", "out", "both"]},
            },
            {"name": "when", "type": TIMESTAMP},
            {"name": "counts", "type": {"type": "array", "items": "long"}},
            {"name": "added_map", "type": {"type": "map", "values": "double"}, "default": {}},
            {"name": "added_array", "type": {"type": "array", "items": "int"}, "default": [1, 2]},
            {"name": "added_int", "type": "int", "default": 7},
            {"name": "added_string", "type": "string", "default": "x"},
            {"name": "added_bool", "type": "boolean", "default": True},
            {
                "name": "added_record",
                "type": {
                    "type": "record",
                    "name": "Added",
                    "fields": [{"name": "a", "type": {"type": "map", "values": "int"}}],
                },
                "default": {"a": {"k": 1}},
            },
        ],
    }
)
RESOLVING = records(WRITER, WRITER["__named_schemas"])
_RESOLVING_DECODER = compile_decoder(WRITER, READER)


def test_resolving_pair_is_compiled() -> None:
    compile_decoder(WRITER, READER)


@PROPERTY
@given(data=st.data())
def test_resolved_read_is_fastavro_resolved_read(data: st.DataObject) -> None:
    decoder = _RESOLVING_DECODER
    record = data.draw(RESOLVING)
    for body in (
        fastavro_write(WRITER, record),
        OddWriter(data, WRITER["__named_schemas"]).write(WRITER, record),
    ):
        expected, expected_end = fastavro_read(WRITER, READER, body)
        decoded, end = decoder(body, 0)
        assert end == expected_end == len(body)
        assert identical(decoded, expected)


@settings(max_examples=1, deadline=None)
@given(record=RESOLVING)
def test_defaults_are_fresh_copies(record: dict[str, Any]) -> None:
    body = fastavro_write(WRITER, record)
    first, _ = _RESOLVING_DECODER(body, 0)
    first["added_map"]["x"] = 1.0
    first["added_array"].append(3)
    first["added_record"]["a"]["k"] = 2
    second, _ = _RESOLVING_DECODER(body, 0)
    assert (second["added_map"], second["added_array"]) == ({}, [1, 2])
    assert second["added_record"] == {"a": {"k": 1}}


def test_skipped_fields_are_not_checked_more_than_fastavro_does() -> None:
    """A skipped string is not decoded, by fastavro either."""
    writer = _record(("gone", "string"), ("kept", "int"))
    reader = _record(("kept", "int"))
    body = b"\x02\xff\x04"
    assert compile_decoder(writer, reader)(body, 0) == ({"kept": 2}, 3)
    assert fastavro_read(writer, reader, body) == ({"kept": 2}, 3)


UNSUPPORTED_PAIRS = [
    (_record(("f", ["null", "string"])), _record(("f", "string"))),  # union to non-union
    (_record(("f", "string")), _record(("f", ["null", "string"]))),  # non-union to union
    (_record(("f", ["null", "int"])), _record(("f", ["null", "string", "int"]))),
    (_record(("f", ["int", "null"])), _record(("f", ["long", "int"]))),  # first match differs
    (_record(("f", {**ENUM, "symbols": ["in", "out", "x"]})), _record(("f", ENUM))),
    (_record(("f", "long")), _record(("f", TIMESTAMP))),  # fastavro follows the writer
    (_record(("f", "long")), _record(("f", "int"))),  # no such promotion
    (_record(("f", "long")), _record(("f", "long"), ("g", "long"))),  # g has no default
    (_record(("f", {"type": "fixed", "name": "F", "size": 2})), None),
    (_record(("f", {"type": "int", "logicalType": "date"})), None),
    (_record(("f", {"type": "array", "items": "null"})), None),
    (
        _parsed(
            {"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}
        ),
        None,
    ),
]


@pytest.mark.parametrize(("writer", "reader"), UNSUPPORTED_PAIRS)
def test_unsupported_pairs_are_refused(writer: Any, reader: Any) -> None:
    with pytest.raises(UnsupportedSchemaError):
        compile_decoder(writer, reader)


def test_an_unsupported_pair_is_read_by_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(*args: object) -> None:
        raise UnsupportedSchemaError("test")

    monkeypatch.setattr("schemas._framing.compile_decoder", unsupported)
    old = VERSIONS["NoiseMeasurement.v0"]
    decoder = _decoder(old)
    assert decoder.__qualname__ == "_fastavro_decoder.<locals>.decode"
    v0_record = {k: v for k, v in _sample("NoiseMeasurement").items() if k != "lcpeak_db"}
    body = fastavro_write(old.parsed, v0_record)
    expected = fastavro_read(old.parsed, schemas.schema(old.name), body)
    assert decoder(body, 0) == expected
    with pytest.raises(DecodeError):
        decoder(body[:-1], 0)


def test_fastavro_decoder_reads_from_a_position() -> None:
    current: SchemaVersion = VERSIONS["DeadLetter"]
    frame = schemas.encode("DeadLetter", _sample("DeadLetter"))
    assert _fastavro_decoder(current, None)(frame, 10) == (_sample("DeadLetter"), len(frame))


# --- timestamps as int microseconds (compile_decoder(..., micros_epoch=...)) ---------------------

#: PostgreSQL's epoch in µs since 1970, the sink's choice; any epoch reads alike.
PG_EPOCH = 946_684_800_000_000
MICROS_READERS = {
    label: compile_decoder(VERSIONS[label].parsed, reader_schema(label), micros_epoch=PG_EPOCH)
    for label in LABELS
}
DECODE_MICROS = micros_decoder(PG_EPOCH)


def as_micros(value: Any, epoch: int = PG_EPOCH) -> Any:
    """``value`` with every datetime as int µs since ``epoch``."""
    if isinstance(value, datetime):
        return epoch_micros(value) - epoch
    if isinstance(value, dict):
        return {k: as_micros(v, epoch) for k, v in value.items()}
    if isinstance(value, list):
        return [as_micros(v, epoch) for v in value]
    return value


def check_micros(label: str, body: bytes) -> None:
    """The micros decoder reads what the datetime decoder reads, timestamps as ints, and
    refuses what it refuses."""
    try:
        expected, expected_end = _READERS[label][2](body, 0)
    except MALFORMED as exc:
        with pytest.raises(type(exc)):
            MICROS_READERS[label](body, 0)
        return
    record, end = MICROS_READERS[label](body, 0)
    assert end == expected_end
    assert identical(record, as_micros(expected))


@pytest.mark.parametrize("label", LABELS)
@PROPERTY
@given(data=st.data())
def test_micros_read_is_the_datetime_read_as_ints(label: str, data: st.DataObject) -> None:
    writer = VERSIONS[label].parsed
    record = data.draw(VERSION_STRATEGIES[label])
    check_micros(label, fastavro_write(writer, record))
    check_micros(label, OddWriter(data, writer["__named_schemas"]).write(writer, record))


@pytest.mark.parametrize("label", LABELS)
@GARBAGE
@given(data=st.data())
def test_micros_read_refuses_what_the_datetime_read_refuses(
    label: str, data: st.DataObject
) -> None:
    body = fastavro_write(VERSIONS[label].parsed, data.draw(VERSION_STRATEGIES[label]))
    for _ in range(data.draw(st.integers(1, 3))):
        body = data.draw(_mutations(body))
    check_micros(label, body)


@pytest.mark.parametrize(
    "micros",
    [-1, 0, 1, 10**15, -62_135_596_800_000_000, 253_402_300_799_999_999],
)
def test_micros_at_the_edges_of_datetimes_range(micros: int) -> None:
    record = dict(_sample("DeadLetter"), received_at=micros)
    frame = schemas.encode("DeadLetter", record)
    _, decoded = schemas.decode(frame)
    _, as_int = DECODE_MICROS(frame)
    assert (
        as_int["received_at"]
        == micros - PG_EPOCH
        == epoch_micros(decoded["received_at"]) - PG_EPOCH
    )
    _, unix = micros_decoder()(frame)
    assert unix["received_at"] == micros


@pytest.mark.parametrize("micros", [-62_135_596_800_000_001, 253_402_300_799_999_999 + 1])
def test_micros_beyond_datetimes_range_are_errors_as_datetimes(micros: int) -> None:
    schema = cast(
        dict[str, Any],
        parse_schema(
            {
                "type": "record",
                "name": "T",
                "fields": [
                    {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}
                ],
            }
        ),
    )
    zigzag = (micros << 1) ^ (micros >> 63)
    body = bytearray()
    while zigzag >= 0x80:
        body.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    body.append(zigzag)
    with pytest.raises(OverflowError):
        compile_decoder(schema)(bytes(body), 0)
    with pytest.raises(OverflowError):
        compile_decoder(schema, micros_epoch=PG_EPOCH)(bytes(body), 0)
    inside = micros - 1 if micros > 0 else micros + 1  # the last value in range
    assert compile_decoder(schema, micros_epoch=0)(fastavro_write(schema, {"t": inside}), 0) == (
        {"t": inside},
        9,
    )


def test_micros_decoder_frames_as_decode() -> None:
    decode_micros = DECODE_MICROS
    for name, record in sample_records().items():
        frame = schemas.encode(name, record)
        expected_name, expected = schemas.decode(frame)
        got_name, got = decode_micros(frame)
        assert got_name == expected_name == name
        assert identical(got, as_micros(expected))
        assert identical(decode_micros(cast(bytes, bytearray(frame)))[1], got)
    frame = schemas.encode("DeadLetter", _sample("DeadLetter"))
    for bad in (
        b"",
        b"\xc3",
        frame[:5],
        b"\xc3\x02" + frame[2:],
        frame[:2] + b"\0" * 8,
        frame + b"x",
    ):
        with pytest.raises(SchemaError) as expected_error:
            schemas.decode(bad)
        with pytest.raises(SchemaError) as error:
            decode_micros(bad)
        assert str(error.value) == str(expected_error.value)


def test_micros_decoder_falls_back_to_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise UnsupportedSchemaError("test")

    monkeypatch.setattr("schemas._framing.compile_decoder", unsupported)
    monkeypatch.setattr("schemas._framing.compile_tuple_decoder", unsupported)
    decode_micros = micros_decoder(PG_EPOCH, {"DeadLetter": ("received_at", "payload")})
    for name, record in sample_records().items():
        frame = schemas.encode(name, record)
        expected = as_micros(schemas.decode(frame)[1])
        if name == "DeadLetter":
            expected = (expected["received_at"], expected["payload"])
        assert identical(decode_micros(frame)[1], expected)
    with pytest.raises(SchemaError, match="no field 'nope'"):
        micros_decoder(PG_EPOCH, {"DeadLetter": ("nope",)})(
            schemas.encode("DeadLetter", _sample("DeadLetter"))
        )


# --- records as tuples of some fields (compile_tuple_decoder) ------------------------------------


def _tuple_fields(label: str) -> tuple[str, ...]:
    """The reader's fields, last first, one left out: order and selection are the caller's."""
    fields = [f["name"] for f in (reader_schema(label) or VERSIONS[label].parsed)["fields"]]
    return tuple(reversed(fields[1:]))


TUPLE_READERS = {
    label: compile_tuple_decoder(
        VERSIONS[label].parsed, reader_schema(label), _tuple_fields(label), micros_epoch=PG_EPOCH
    )
    for label in LABELS
}


def check_tuple(label: str, body: bytes) -> None:
    """The tuple decoder reads the micros decoder's values of its fields, and refuses what it
    refuses."""
    try:
        expected, expected_end = MICROS_READERS[label](body, 0)
    except MALFORMED as exc:
        with pytest.raises(type(exc)):
            TUPLE_READERS[label](body, 0)
        return
    values, end = TUPLE_READERS[label](body, 0)
    assert end == expected_end
    assert identical(list(values), [expected[f] for f in _tuple_fields(label)])


@pytest.mark.parametrize("label", LABELS)
@PROPERTY
@given(data=st.data())
def test_tuple_read_is_the_dict_read_of_its_fields(label: str, data: st.DataObject) -> None:
    writer = VERSIONS[label].parsed
    record = data.draw(VERSION_STRATEGIES[label])
    check_tuple(label, fastavro_write(writer, record))
    check_tuple(label, OddWriter(data, writer["__named_schemas"]).write(writer, record))
    body = fastavro_write(writer, record)
    for _ in range(data.draw(st.integers(1, 3))):
        body = data.draw(_mutations(body))
    check_tuple(label, body)


def test_tuple_fields_must_be_fields_of_the_record() -> None:
    with pytest.raises(UnsupportedSchemaError, match="no field nope"):
        compile_tuple_decoder(VERSIONS["DeadLetter"].parsed, None, ("payload", "nope"))


def test_micros_decoder_reads_named_schemas_as_tuples() -> None:
    fields = ("received_at", "payload")
    decode_tuples = micros_decoder(PG_EPOCH, {"DeadLetter": fields})
    frame = schemas.encode("DeadLetter", _sample("DeadLetter"))
    _, record = schemas.decode(frame)
    assert decode_tuples(frame) == (
        "DeadLetter",
        (epoch_micros(record["received_at"]) - PG_EPOCH, record["payload"]),
    )
    other = schemas.encode("NoiseMeasurement", _sample("NoiseMeasurement"))
    assert identical(decode_tuples(other)[1], as_micros(schemas.decode(other)[1]))
