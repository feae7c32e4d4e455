"""Avro binary encoders compiled once per schema: the hot path of :func:`schemas.encode`.

fastavro's ``schemaless_writer`` interprets the parsed schema for every record and resolves each
union by validating the value against its branches: ~20 µs for a measurement record, whose 35
fields are mostly ``["null", "double"]`` unions. Here each record schema becomes one straight-line
Python function, generated at import from the parsed schema, that checks each value's type and
appends its encoding to a ``bytearray`` (Avro 1.11 specification, "Binary Encoding"):

- ``null``: nothing; ``boolean``: one byte 0 or 1;
- ``int`` / ``long``: zig-zag then base-128 varint, low group first;
- ``double``: 8 bytes IEEE 754, little-endian;
- ``string`` / ``bytes``: length as a ``long``, then the UTF-8 / raw bytes;
- ``enum``: the symbol's 0-based index as an ``int``;
- ``array`` / ``map``: one block (item count as a ``long``, then the items; a map item is its
  string key then its value), then the end block, count 0; an empty one is the end block alone;
- ``record``: its fields in schema order; union: branch index as a ``long``, then the value;
- ``timestamp-micros``: a ``long`` of microseconds since 1970-01-01T00:00:00Z.

Only those types are compiled, with unions of ``null`` and one other type: :func:`compile_encoder`
raises :class:`UnsupportedSchemaError` for anything else, and the caller then uses fastavro.

The output is byte-identical to fastavro's for every record this module accepts (tests check it on
random records). It accepts fewer records than fastavro: fastavro writes ``1`` for ``1.7`` in a
``long``, ``0`` for ``None`` in a ``boolean``, an out-of-range ``int`` as a ``long``, and a naive
``datetime`` as local time; here each of those is an :class:`EncodeError` naming the field.
Accepted values: ``bool`` for ``boolean``; an integral number (not a ``bool``) within range for
``int`` / ``long``; a real number (not a ``bool``) for ``double``; ``str`` for ``string``;
``bytes`` / ``bytearray`` for ``bytes``; a symbol for ``enum``; a ``list`` or ``tuple`` for
``array`` (a ``list`` only inside a union, where fastavro reads a tuple as ``(branch, value)``);
a mapping with ``str`` keys for ``map`` and ``record``; a timezone-aware ``datetime`` or an ``int``
of microseconds for ``timestamp-micros``. A missing field takes its default, or ``None`` if it is
a union with ``null`` and has none, as fastavro does; a missing field with neither is an error.
Extra keys are ignored, as fastavro does.

The generated source only embeds field names through :func:`repr` and small integers; every
other value (defaults, enum tables) is passed to :func:`exec` as a global of the new function.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from numbers import Integral, Real
from typing import Any, Final, cast

from schemas._avro import EPOCH as _EPOCH
from schemas._avro import HIGH_VARINTS as _HIGH_VARINTS
from schemas._avro import INT_MAX as _INT_MAX
from schemas._avro import INT_MIN as _INT_MIN
from schemas._avro import LONG_MAX as _LONG_MAX
from schemas._avro import LONG_MIN as _LONG_MIN
from schemas._avro import VARINT_GROUPS_14 as _GROUPS_14
from schemas._avro import double_bytes, epoch_micros
from schemas._avro import high_varint as _high_varint
from schemas._avro import varint as _varint
from schemas._avro import write_varint as _write_varint
from schemas._codegen import SourceBuilder

__all__ = ["EncodeError", "Encoder", "UnsupportedSchemaError", "compile_encoder", "epoch_micros"]

#: Appends the Avro binary encoding of a record to a buffer; raises :class:`EncodeError`.
Encoder = Callable[[Mapping[str, Any], bytearray], None]

_PACK_DOUBLE: Final = double_bytes
#: Smallest long whose zig-zag varint has 5 bytes or more (zigzag >= 2**28): the generated code
#: writes those (timestamps) from the varint tables inline.
_LARGE_TIMESTAMP: Final = 1 << 27
_PACK_BRANCH_DOUBLE: Final = struct.Struct("<Bd").pack  # a union branch index < 64, a double
_PRIMITIVES: Final = frozenset({"null", "boolean", "int", "long", "double", "string", "bytes"})
_VALUE_PREVIEW = 60  # characters of a bad value quoted in an error


class UnsupportedSchemaError(Exception):
    """The schema uses a type this module does not compile; encode it with fastavro."""


class EncodeError(TypeError):
    """A value that does not fit its field; ``path`` names the field (``source.rssi``,
    ``counts[2].line``, ``other_values['x']``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"field {path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem

    def within(self, prefix: str) -> EncodeError:
        """The same error seen from the enclosing array item or map value ``prefix``."""
        if not self.path:
            path = prefix
        elif self.path.startswith("["):
            path = prefix + self.path
        else:
            path = f"{prefix}.{self.path}"
        return EncodeError(path, self.problem)


def _mismatch(path: str, expected: str, value: object) -> EncodeError:
    shown = repr(value)
    if len(shown) > _VALUE_PREVIEW:
        shown = shown[: _VALUE_PREVIEW - 3] + "..."
    return EncodeError(path, f"expected {expected}, got {type(value).__name__} {shown}")


# --- the slow side of each type: what the inlined fast checks do not cover ------------------------


def _integer(value: object, path: str, expected: str, low: int, high: int) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise _mismatch(path, expected, value)
        value = int(value)
    if not low <= value <= high:
        raise _mismatch(path, f"{expected} in [{low}, {high}]", value)
    return value


def _write_long(out: bytearray, value: object, path: str, expected: str) -> None:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        value = _integer(value, path, expected, _LONG_MIN, _LONG_MAX)
    _write_varint(out, value << 1 if value >= 0 else ~(value << 1))


def _write_int(out: bytearray, value: object, path: str, expected: str) -> None:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        value = _integer(value, path, expected, _INT_MIN, _INT_MAX)
    _write_varint(out, value << 1 if value >= 0 else ~(value << 1))


def _double(value: object, path: str, expected: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _mismatch(path, expected, value)
    try:
        return _PACK_DOUBLE(float(value))
    except OverflowError:
        raise _mismatch(path, f"{expected} within the range of a double", value) from None


def _write_string(out: bytearray, value: object, path: str, expected: str) -> None:
    if not isinstance(value, str):
        raise _mismatch(path, expected, value)
    try:
        encoded = value.encode()
    except UnicodeEncodeError as exc:
        raise EncodeError(path, f"not encodable as UTF-8: {exc.reason}") from None
    _write_varint(out, len(encoded) << 1)
    out += encoded


def _write_bytes(out: bytearray, value: object, path: str, expected: str) -> None:
    if not isinstance(value, bytes | bytearray):
        raise _mismatch(path, expected, value)
    _write_varint(out, len(value) << 1)
    out += value


def _write_timestamp(out: bytearray, value: object, path: str, expected: str) -> None:
    if isinstance(value, datetime):
        try:
            micros = epoch_micros(value)
        except ValueError:
            raise EncodeError(
                path, f"expected a timezone-aware datetime, got naive {value.isoformat()}"
            ) from None
        _write_long(out, micros, path, expected)
    else:
        _write_long(out, value, path, expected)


def _as_dict(value: object, path: str, expected: str) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise _mismatch(path, expected, value)
    return dict(value)


def _naive(path: str, value: datetime) -> EncodeError:
    return EncodeError(
        path, f"expected a timezone-aware datetime, got one without UTC offset {value!r}"
    )


def _missing(path: str) -> EncodeError:
    return EncodeError(path, "missing, and the field has no default")


_HELPERS: Final[Mapping[str, object]] = {
    "_EPOCH": _EPOCH,
    "_datetime": datetime,
    "_pack_double": _PACK_DOUBLE,
    "_pack_branch_double": _PACK_BRANCH_DOUBLE,
    "_write_varint": _write_varint,
    "_GROUPS_14": _GROUPS_14,
    "_HIGH_VARINTS": _HIGH_VARINTS,
    "_high_varint": _high_varint,
    "_naive": _naive,
    "_write_long": _write_long,
    "_write_int": _write_int,
    "_double": _double,
    "_write_string": _write_string,
    "_write_bytes": _write_bytes,
    "_write_timestamp": _write_timestamp,
    "_as_dict": _as_dict,
    "_missing": _missing,
    "_mismatch": _mismatch,
    "EncodeError": EncodeError,
}


# --- code generation -----------------------------------------------------------------------------


class _Compiler(SourceBuilder):
    """Emits the body of ``def encode(record, out)``; ``ap`` is ``out.append``."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        super().__init__(_HELPERS)
        self.named = named

    def value(self, schema: Any, var: str, path: str, depth: int, in_union: bool = False) -> None:
        """Emit code appending the encoding of the local ``var`` (field ``path``, relative to the
        innermost array item or map value) for ``schema``."""
        expected_suffix = " or null" if in_union else ""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                self.primitive(schema, var, path, depth, schema + expected_suffix)
            elif schema in self.named:
                self.value(self.named[schema], var, path, depth, in_union)
            else:
                raise UnsupportedSchemaError(f"type {schema!r}")
        elif isinstance(schema, list):
            if in_union:
                raise UnsupportedSchemaError("a union inside a union")
            self.union(schema, var, path, depth)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            logical = schema.get("logicalType")
            if logical is not None:
                if logical != "timestamp-micros" or kind != "long":
                    raise UnsupportedSchemaError(f"logical type {logical!r} on {kind!r}")
                self.timestamp(var, path, depth, "timestamp-micros" + expected_suffix)
            elif isinstance(kind, str) and kind in _PRIMITIVES:
                self.primitive(kind, var, path, depth, kind + expected_suffix)
            elif kind == "record":
                if in_union:
                    # fastavro picks a record branch by its "-type" key or by validating the
                    # whole record: not worth reproducing for a shape our schemas do not use.
                    raise UnsupportedSchemaError("a record inside a union")
                self.record(schema, var, path, depth, "a record")
            elif kind == "enum":
                self.enum(schema, var, path, depth, expected_suffix)
            elif kind == "array":
                self.array(schema, var, path, depth, in_union, "an array" + expected_suffix)
            elif kind == "map":
                self.map(schema, var, path, depth, "a map" + expected_suffix)
            else:
                raise UnsupportedSchemaError(f"type {kind!r}")
        else:
            raise UnsupportedSchemaError(f"schema {schema!r}")

    def primitive(self, kind: str, var: str, path: str, depth: int, expected: str) -> None:
        emit = self.emit
        if kind == "null":
            emit(depth, f"if {var} is not None:")
            emit(depth + 1, f"raise _mismatch({path!r}, {expected!r}, {var})")
        elif kind == "boolean":
            emit(depth, f"if {var} is True:")
            emit(depth + 1, "ap(1)")
            emit(depth, f"elif {var} is False:")
            emit(depth + 1, "ap(0)")
            emit(depth, "else:")
            emit(depth + 1, f"raise _mismatch({path!r}, {expected!r}, {var})")
        elif kind in ("int", "long"):
            # Counters and small numbers: zig-zag varints of one or two bytes, inline.
            emit(depth, f"if type({var}) is int and 0 <= {var} < 64:")
            emit(depth + 1, f"ap({var} << 1)")
            emit(depth, f"elif type({var}) is int and 64 <= {var} < 0x2000:")
            emit(depth + 1, f"ap({var} << 1 & 0x7F | 0x80)")
            emit(depth + 1, f"ap({var} >> 6)")
            emit(depth, "else:")
            emit(depth + 1, f"_write_{kind}(out, {var}, {path!r}, {expected!r})")
        elif kind == "double":
            emit(depth, f"if type({var}) is float:")
            emit(depth + 1, f"out += _pack_double({var})")
            emit(depth, "else:")
            emit(depth + 1, f"out += _double({var}, {path!r}, {expected!r})")
        elif kind == "string":
            encoded, size = self.fresh("b"), self.fresh("n")
            emit(depth, f"if type({var}) is str:")
            emit(depth + 1, "try:")
            emit(depth + 2, f"{encoded} = {var}.encode()")
            emit(depth + 1, "except UnicodeEncodeError:")
            emit(depth + 2, f"_write_string(out, {var}, {path!r}, {expected!r})")
            emit(depth + 1, "else:")
            emit(depth + 2, f"{size} = len({encoded})")
            emit(depth + 2, f"if {size} < 64:")
            emit(depth + 3, f"ap({size} << 1)")
            emit(depth + 2, "else:")
            emit(depth + 3, f"_write_varint(out, {size} << 1)")
            emit(depth + 2, f"out += {encoded}")
            emit(depth, "else:")
            emit(depth + 1, f"_write_string(out, {var}, {path!r}, {expected!r})")
        else:  # bytes
            emit(depth, f"if type({var}) is bytes and len({var}) < 64:")
            emit(depth + 1, f"ap(len({var}) << 1)")
            emit(depth + 1, f"out += {var}")
            emit(depth, "else:")
            emit(depth + 1, f"_write_bytes(out, {var}, {path!r}, {expected!r})")

    def timestamp(self, var: str, path: str, depth: int, expected: str) -> None:
        emit = self.emit
        delta, zigzag, low, high = (self.fresh(p) for p in ("delta", "zigzag", "low", "high"))
        emit(depth, f"if type({var}) is _datetime and {var}.tzinfo is not None:")
        emit(depth + 1, "try:")
        emit(depth + 2, f"{delta} = {var} - _EPOCH")
        emit(depth + 1, "except TypeError:")  # its tzinfo gives no UTC offset
        emit(depth + 2, f"raise _naive({path!r}, {var}) from None")
        # fastavro's formula; exact integer arithmetic.
        emit(
            depth + 1,
            f"{var} = ({delta}.days * 86400 + {delta}.seconds) * 1000000 + {delta}.microseconds",
        )
        # Any time after 1970-01-01T00:02:14Z has a zig-zag varint of 5 to 9 bytes: two groups
        # of 7 bits from a table, then the varint of the bits above 28, cached.
        emit(depth, f"if type({var}) is int and {_LARGE_TIMESTAMP} <= {var} <= {_LONG_MAX}:")
        emit(depth + 1, f"{zigzag} = {var} << 1")
        emit(depth + 1, f"{low} = {zigzag} & 0xFFFFFFF")
        emit(depth + 1, f"out += _GROUPS_14[{low} & 0x3FFF]")
        emit(depth + 1, f"out += _GROUPS_14[{low} >> 14]")
        emit(depth + 1, f"{high} = _HIGH_VARINTS.get({zigzag} >> 28)")
        emit(depth + 1, f"if {high} is None:")
        emit(depth + 2, f"{high} = _high_varint({zigzag} >> 28)")
        emit(depth + 1, f"out += {high}")
        emit(depth, "else:")
        emit(depth + 1, f"_write_timestamp(out, {var}, {path!r}, {expected!r})")

    def union(self, branches: list[Any], var: str, path: str, depth: int) -> None:
        if len(branches) != 2 or branches.count("null") != 1:
            raise UnsupportedSchemaError(f"union {branches!r}: only null and one other type")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        self.emit(depth, f"if {var} is None:")
        self.emit(depth + 1, f"ap({null_index << 1})")
        if other == "double" or other == {"type": "double"}:
            # The typed quantities of a measurement: branch index and value in one pack.
            self.emit(depth, f"elif type({var}) is float:")
            self.emit(depth + 1, f"out += _pack_branch_double({(1 - null_index) << 1}, {var})")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"ap({(1 - null_index) << 1})")
        self.value(other, var, path, depth + 1, in_union=True)

    def record(
        self, schema: dict[str, Any], var: str, path: str, depth: int, expected: str
    ) -> None:
        name = schema["name"]
        if name in self.open_records:
            raise UnsupportedSchemaError(f"recursive record {name}")
        self.open_records.append(name)
        emit = self.emit
        emit(depth, f"if type({var}) is not dict:")
        emit(depth + 1, f"{var} = _as_dict({var}, {path!r}, {expected!r})")
        for field in schema["fields"]:
            field_name = field["name"]
            field_type = field["type"]
            field_path = f"{path}.{field_name}" if path else field_name
            field_var = self.fresh("v")
            emit(depth, "try:")
            emit(depth + 1, f"{field_var} = {var}[{field_name!r}]")
            emit(depth, "except KeyError:")
            # fastavro: datum.get(name, field.get("default")), an error only when the field has
            # no default and its type has no null branch.
            if "default" in field:
                emit(depth + 1, f"{field_var} = {self.constant(field['default'])}")
            elif isinstance(field_type, list) and "null" in field_type:
                emit(depth + 1, f"{field_var} = None")
            else:
                emit(depth + 1, f"raise _missing({field_path!r}) from None")
            self.value(field_type, field_var, field_path, depth)
        self.open_records.pop()

    def enum(self, schema: dict[str, Any], var: str, path: str, depth: int, suffix: str) -> None:
        symbols = schema["symbols"]
        table = {symbol: _varint(index << 1) for index, symbol in enumerate(symbols)}
        expected = f"one of {symbols}{suffix}"
        self.emit(depth, "try:")
        self.emit(depth + 1, f"out += {self.constant(table)}[{var}]")
        self.emit(depth, "except (KeyError, TypeError):")
        self.emit(depth + 1, f"raise _mismatch({path!r}, {expected!r}, {var}) from None")

    def count(self, var: str, depth: int) -> None:
        self.emit(depth, f"if len({var}) < 64:")
        self.emit(depth + 1, f"ap(len({var}) << 1)")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"_write_varint(out, len({var}) << 1)")

    def array(
        self,
        schema: dict[str, Any],
        var: str,
        path: str,
        depth: int,
        in_union: bool,
        expected: str,
    ) -> None:
        emit = self.emit
        index, item = self.fresh("i"), self.fresh("item")
        if in_union:
            emit(depth, f"if type({var}) is not list:")
        else:
            emit(depth, f"if type({var}) is not list and type({var}) is not tuple:")
        emit(depth + 1, f"raise _mismatch({path!r}, {expected!r}, {var})")
        emit(depth, f"if {var}:")
        self.count(var, depth + 1)
        emit(depth + 1, f"for {index}, {item} in enumerate({var}):")
        emit(depth + 2, "try:")
        self.value(schema["items"], item, "", depth + 3)
        emit(depth + 2, "except EncodeError as exc:")
        emit(depth + 3, f"raise exc.within({path!r} + f'[{{{index}}}]') from None")
        emit(depth, "ap(0)")

    def map(self, schema: dict[str, Any], var: str, path: str, depth: int, expected: str) -> None:
        emit = self.emit
        key, item = self.fresh("key"), self.fresh("item")
        emit(depth, f"if type({var}) is not dict:")
        emit(depth + 1, f"{var} = _as_dict({var}, {path!r}, {expected!r})")
        emit(depth, f"if {var}:")
        self.count(var, depth + 1)
        emit(depth + 1, f"for {key}, {item} in {var}.items():")
        emit(depth + 2, "try:")
        self.primitive("string", key, "", depth + 3, "a string key")
        self.value(schema["values"], item, "", depth + 3)
        emit(depth + 2, "except EncodeError as exc:")
        emit(depth + 3, f"raise exc.within({path!r} + f'[{{{key}!r}}]') from None")
        emit(depth, "ap(0)")


def compile_encoder(parsed: dict[str, Any]) -> Encoder:
    """Compile the fastavro-parsed record schema ``parsed`` into an :data:`Encoder`.

    Raises :class:`UnsupportedSchemaError` when the schema uses a type this module does not handle.
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise UnsupportedSchemaError("only record schemas are compiled")
    compiler = _Compiler(parsed.get("__named_schemas", {}))
    compiler.record(parsed, "record", "", 1, "a record")
    source = "\n".join(["def encode(record, out):", "    ap = out.append", *compiler.lines])
    namespace = compiler.globals
    # The source is generated above from a parsed schema: names go through repr(), values are
    # passed as globals, never as text.
    exec(compile(source, f"<avro encoder {parsed['name']}>", "exec"), namespace)  # noqa: S102
    encoder = cast(Encoder, namespace["encode"])
    encoder.__doc__ = f"Append the Avro binary encoding of a {parsed['name']} record to ``out``."
    return encoder
