"""The Avro primitives every encoder, decoder and the COPY transcoder share, against fastavro.

fastavro is the reference implementation the project checks its own codecs against: each
primitive here must write fastavro's bytes and read them back, compiled and from its source.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import _avro
from tests._source import plain_python

_SOURCE = plain_python(_avro)
LONGS = st.integers(-(1 << 63), (1 << 63) - 1) | st.sampled_from(
    [
        sign * ((1 << bits) + delta)
        for bits in range(6, 64, 7)
        for delta in (-1, 0, 1)
        for sign in (1, -1)
        if -(1 << 63) <= sign * ((1 << bits) + delta) < (1 << 63)
    ]
)
#: hypothesis takes naive bounds and gives aware values (``timezones``).
TIMES = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@pytest.fixture(params=["imported", "source"], scope="module")
def avro(request: pytest.FixtureRequest) -> ModuleType:
    """``schemas._avro`` as imported (compiled when built) and from its ``.py`` source."""
    return _avro if request.param == "imported" else _SOURCE


def _fastavro(schema: Any, value: object) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    return out.getvalue()


def _fastavro_read(schema: Any, data: bytes) -> object:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


@given(value=LONGS)
def test_longs_are_written_and_read_as_fastavro_does(avro: ModuleType, value: int) -> None:
    encoded = _fastavro("long", value)
    assert avro.long_bytes(value) == encoded
    assert avro.varint(avro.zigzag(value)) == encoded
    written = bytearray(b"x")
    avro.write_varint(written, avro.zigzag(value))
    assert bytes(written) == b"x" + encoded
    assert avro.read_long(b"\x00" + encoded, 1) == (value, len(encoded) + 1)
    assert avro.unzigzag(avro.zigzag(value)) == value
    assert _fastavro_read("long", encoded) == value


@given(value=st.floats(allow_nan=False) | st.sampled_from([float("inf"), float("-inf"), -0.0]))
def test_doubles_are_fastavros(avro: ModuleType, value: float) -> None:
    assert avro.double_bytes(value) == _fastavro("double", value)


@given(value=st.text())
def test_strings_are_fastavros(avro: ModuleType, value: str) -> None:
    encoded = avro.string_bytes(value)
    assert encoded == _fastavro("string", value)
    assert _fastavro_read("string", encoded) == value


@given(moment=TIMES)
def test_timestamps_are_fastavros(avro: ModuleType, moment: datetime) -> None:
    schema = {"type": "long", "logicalType": "timestamp-micros"}
    encoded = _fastavro(schema, moment)
    micros = avro.epoch_micros(moment)
    assert micros == avro.utc_micros(moment)
    assert avro.long_bytes(micros) == encoded
    assert avro.MIN_MICROS <= micros <= avro.MAX_MICROS
    assert avro.EPOCH + timedelta(microseconds=micros) == moment
    if micros >= 0 and len(encoded) == 8:
        assert avro.read_long_8(encoded, 0) == (micros, 8)


def test_a_naive_datetime_has_no_instant(avro: ModuleType) -> None:
    with pytest.raises(ValueError, match="naive"):
        avro.epoch_micros(datetime(2026, 1, 1))  # noqa: DTZ001  (naive on purpose)


@given(value=LONGS)
def test_read_long_8_takes_only_8_byte_non_negative_varints(avro: ModuleType, value: int) -> None:
    encoded = _fastavro("long", value)
    found = avro.read_long_8(encoded + b"\x00" * 8, 0)
    if value >= 0 and len(encoded) == 8:
        assert found == (value, 8)
    else:
        assert found[1] == -1


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", _avro.TRUNCATED),
        (b"\x80", _avro.TRUNCATED),
        (b"\xff" * 9, _avro.TRUNCATED),
        (b"\xff" * 10 + b"\x01", _avro.TOO_LONG),  # 11 bytes
        (b"\xff" * 9 + b"\x02", _avro.BEYOND_64_BITS),  # bit 64 set
        (b"\xfe" + b"\xff" * 8 + b"\x01", 10),  # 2**64 - 2 zig-zag: the largest long
        (b"\xff" * 9 + b"\x01", 10),  # the smallest long
    ],
)
def test_malformed_varints_are_refused_not_read(avro: ModuleType, data: bytes, end: int) -> None:
    value, found = avro.read_long(data, 0)
    assert found == end
    if end > 0:
        assert value == _fastavro_read("long", data)


def test_the_single_object_header_is_the_marker_then_the_fingerprint(avro: ModuleType) -> None:
    """Avro specification, "Single-object encoding": ``C3 01`` then the 8-byte CRC-64-AVRO
    fingerprint, little-endian (fastavro's ``fingerprint`` gives those bytes in that order)."""
    schema = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "long"}]}
    canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema))
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    header = avro.single_object_header(fingerprint)
    assert header == b"\xc3\x01" + fingerprint
    assert len(header) == avro.SINGLE_OBJECT_HEADER_SIZE
    assert header[:2] == avro.SINGLE_OBJECT_MARKER
    with pytest.raises(ValueError, match="8 bytes"):
        avro.single_object_header(fingerprint[:7])


def test_the_high_varint_cache_stays_bounded(avro: ModuleType) -> None:
    avro.HIGH_VARINTS.clear()
    for high in range(avro.HIGH_VARINTS_SIZE + 10):
        assert avro.high_varint(high) == avro._varint_loop(high)
    assert len(avro.HIGH_VARINTS) <= avro.HIGH_VARINTS_SIZE


@given(
    zigzag=st.integers(0, (1 << 64) - 1)
    | st.sampled_from([(1 << bits) + delta for bits in range(7, 64, 7) for delta in (-1, 0, 1)])
)
def test_varint_tables_equal_the_byte_loop(avro: ModuleType, zigzag: int) -> None:
    """Each length's shortcut (one, two, three, five or more bytes) writes the loop's bytes."""
    assert avro.varint(zigzag) == avro._varint_loop(zigzag)
