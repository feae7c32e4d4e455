"""Kafka value framings: Avro single-object encoding (default) and the Confluent wire format.

Single-object encoding (Avro 1.11 specification, "Single-object encoding")::

    offset  size  content
    0       2     marker C3 01
    2       8     CRC-64-AVRO fingerprint of the writer schema, little-endian
    10      ...   Avro binary encoding of the record

Confluent wire format (Confluent Schema Registry documentation, "Wire format")::

    offset  size  content
    0       1     magic byte 0
    1       4     schema id assigned by the registry, big-endian
    5       ...   Avro binary encoding of the record

Decoding resolves the writer schema (any loaded version, current or kept) and reads the record
with the current version of the same name, so consumers always get the current shape: fields an
older writer lacked come back with their defaults.

Encoding is on the hot path: the schemas are parsed at import, the frame header is precomputed
and each thread reuses one buffer.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping
from io import BytesIO
from types import MappingProxyType
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer

from schemas._registry import (
    SchemaError,
    SchemaVersion,
    all_versions,
    version,
    version_by_fingerprint,
)

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MARKER",
    "ConfluentFraming",
    "Framing",
    "SingleObjectFraming",
    "decode",
    "encode",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER_SIZE = 10
_CONFLUENT_HEADER_SIZE = 5
_CONFLUENT_ID = struct.Struct(">I")
_MAX_CONFLUENT_ID = 0x7FFF_FFFF  # registry ids are Java ints
# What fastavro raises on a record that does not fit the schema, or on bytes that do not fit it.
_WRITE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError)
_READ_ERRORS = (EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError)


class Framing(Protocol):
    """How a record becomes a Kafka value and back."""

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` written with the current schema ``name``."""
        ...

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return the schema name and the record read with that name's current schema."""
        ...


class _Writer:
    """Writes header + Avro body into a per-thread reused buffer."""

    __slots__ = ("_local",)

    def __init__(self) -> None:
        self._local = threading.local()

    def write(
        self, header: bytes, schema_version: SchemaVersion, record: Mapping[str, Any]
    ) -> bytes:
        try:
            buffer: BytesIO = self._local.buffer
        except AttributeError:
            buffer = self._local.buffer = BytesIO()
        buffer.seek(0)
        buffer.truncate()
        buffer.write(header)
        try:
            schemaless_writer(buffer, schema_version.parsed, record)
        except _WRITE_ERRORS as exc:
            raise SchemaError(
                f"{schema_version.name}: record does not match the schema: {exc}"
            ) from exc
        return buffer.getvalue()


def _read(data: bytes, offset: int, writer: SchemaVersion, what: str) -> tuple[str, dict[str, Any]]:
    """Read the body at ``offset`` written with ``writer``; the body must end the frame."""
    reader = writer if writer.current else version(writer.name)
    stream = BytesIO(data)
    stream.seek(offset)
    try:
        record = schemaless_reader(stream, writer.parsed, None if writer.current else reader.parsed)
    except _READ_ERRORS as exc:
        raise SchemaError(f"{what}: body is not a valid {writer.label} record: {exc!r}") from exc
    if stream.tell() != len(data):
        raise SchemaError(
            f"{what}: {len(data) - stream.tell()} trailing bytes after the {writer.label} record"
        )
    if not isinstance(record, dict):  # a record schema always reads as a dict
        raise SchemaError(f"{what}: {writer.label} did not read as a record")
    return writer.name, record


class SingleObjectFraming:
    """Avro single-object encoding: ``C3 01`` + 8-byte little-endian fingerprint + body.

    Any consumer holding the ``.avsc`` files can resolve the writer schema from the frame alone.
    Safe to share between threads (each thread gets its own buffer).
    """

    __slots__ = ("_writer",)

    def __init__(self) -> None:
        self._writer = _Writer()

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` with the current schema ``name``.

        Timestamps are ``datetime`` objects with a time zone, or ints in microseconds since the
        epoch; a naive ``datetime`` would be taken as local time by fastavro.
        """
        current = version(name)
        return self._writer.write(current.header, current, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return ``(name, record)``; the writer schema may be any loaded version of ``name``."""
        if len(data) < _SINGLE_OBJECT_HEADER_SIZE:
            raise SchemaError(
                f"single-object frame truncated: {len(data)} bytes, the header alone is "
                f"{_SINGLE_OBJECT_HEADER_SIZE}"
            )
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise SchemaError(
                f"not an Avro single-object frame: marker {bytes(data[:2]).hex()}, expected c301"
            )
        writer = version_by_fingerprint(bytes(data[2:_SINGLE_OBJECT_HEADER_SIZE]))
        return _read(data, _SINGLE_OBJECT_HEADER_SIZE, writer, "single-object frame")


class ConfluentFraming:
    """Confluent wire format: magic ``00`` + 4-byte big-endian schema id + body.

    ``ids`` maps a schema label to the id a registry assigned it: ``"NoiseMeasurement"`` for the
    current version (needed to encode it), ``"NoiseMeasurement.v0"`` for a kept earlier one (to
    decode records written with it). No registry client here: the caller registers the schemas
    (:func:`schemas.schema_text`) and passes the ids.
    """

    __slots__ = ("_by_id", "_headers", "_writer")

    def __init__(self, ids: Mapping[str, int]) -> None:
        known = all_versions()
        by_id: dict[int, SchemaVersion] = {}
        headers: dict[str, bytes] = {}
        for label, schema_id in ids.items():
            if label not in known:
                raise SchemaError(f"unknown schema {label!r}; known: {', '.join(sorted(known))}")
            if not 0 <= schema_id <= _MAX_CONFLUENT_ID:
                raise SchemaError(f"schema id {schema_id} of {label} is not a registry id")
            if schema_id in by_id:
                raise SchemaError(
                    f"schema id {schema_id} given to both {by_id[schema_id].label} and {label}"
                )
            by_id[schema_id] = known[label]
            if known[label].current:
                headers[label] = CONFLUENT_MAGIC + _CONFLUENT_ID.pack(schema_id)
        self._by_id: Mapping[int, SchemaVersion] = MappingProxyType(by_id)
        self._headers: Mapping[str, bytes] = MappingProxyType(headers)
        self._writer = _Writer()

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` with the current schema ``name`` and its registry id."""
        current = version(name)
        try:
            header = self._headers[name]
        except KeyError:
            raise SchemaError(f"no Confluent schema id configured for {name}") from None
        return self._writer.write(header, current, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return ``(name, record)`` for a frame whose schema id is in ``ids``."""
        if len(data) < _CONFLUENT_HEADER_SIZE:
            raise SchemaError(
                f"Confluent frame truncated: {len(data)} bytes, the header alone is "
                f"{_CONFLUENT_HEADER_SIZE}"
            )
        if data[:1] != CONFLUENT_MAGIC:
            raise SchemaError(f"not a Confluent frame: magic byte {data[0]:#04x}, expected 0x00")
        (schema_id,) = _CONFLUENT_ID.unpack_from(data, 1)
        try:
            writer = self._by_id[schema_id]
        except KeyError:
            raise SchemaError(f"unknown Confluent schema id {schema_id}") from None
        return _read(data, _CONFLUENT_HEADER_SIZE, writer, "Confluent frame")


_DEFAULT = SingleObjectFraming()


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """Frame ``record`` with the current schema ``name`` in single-object encoding."""
    return _DEFAULT.encode(name, record)


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Read a single-object frame: ``(schema name, record in the current schema's shape)``."""
    return _DEFAULT.decode(data)
