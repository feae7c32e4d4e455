"""Avro binary decoders compiled once per schema pair: the hot path of :func:`schemas.decode`.

fastavro's ``schemaless_reader`` interprets the parsed schema for every record: 20-40 µs for a
measurement record. Here each (writer schema, reader schema) pair becomes one straight-line
Python function, generated at import, that reads ``bytes`` from a position with indexing and
``struct`` and returns ``(record, end position)``. Its output is what fastavro's reader returns
for the same bytes (tests check it on random records): the same dict keys in the same order,
``timestamp-micros`` as an aware UTC ``datetime``, ``bytes`` as ``bytes``, an enum as its symbol,
a union as the plain value of its branch.

Compiled: null, boolean, int, long, float, double, string, bytes, enum, array, map, record,
unions of any of those, and ``timestamp-micros``. Schema resolution (a record written with an
older version, read with the current one) follows fastavro's rules for what it compiles:

- writer fields are matched to reader fields by name, then by the reader field's aliases; a
  writer field the reader lacks is skipped; a reader field the writer lacks gets its default
  (a fresh copy: fastavro hands out the schema's own default object);
- records match by unqualified name or alias, enums too, and the writer's symbols must all be
  reader symbols; promotions int → long/float/double, long → float/double, float → double,
  string ↔ bytes;
- a union reads into a union of as many branches where each writer branch resolves to the reader
  branch at the same index and to no earlier one (fastavro takes the first that matches).

Anything else — fixed, other logical types, a union resolved into a non-union, symbols the reader
lacks, a reader field without default the writer lacks — raises :class:`UnsupportedSchemaError`,
and the caller reads that pair with fastavro.

Malformed bodies raise :class:`DecodeError`, or ``IndexError`` / ``struct.error`` where the data
ends early, ``UnicodeDecodeError`` for a string that is not UTF-8 and ``OverflowError`` for a
timestamp beyond ``datetime``'s range; the framing turns them all into ``SchemaError``. Valid but
non-canonical encodings are read as fastavro reads them (varints with redundant continuation
bytes, arrays and maps in several blocks, negative block counts followed by a byte size). A few
malformed encodings that fastavro reads anyway are errors here: a boolean byte other than 0 or 1
(fastavro: ``True``), a negative enum symbol or union branch index (fastavro indexes from the
end), an ``int`` outside 32 bits, and a varint longer than 10 bytes or beyond 64 bits (fastavro
drops or wraps the high bits).

The generated source only embeds field names through :func:`repr` and small integers; every
other value (defaults, symbol tables) is passed to :func:`exec` as a global of the new function.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, cast

from schemas._avro import EPOCH as _EPOCH
from schemas._avro import INT_MAX as _INT_MAX
from schemas._avro import INT_MIN as _INT_MIN
from schemas._avro import MAX_MICROS as _MAX_MICROS
from schemas._avro import MIN_MICROS as _MIN_MICROS
from schemas._avro import TOO_LONG, TRUNCATED, read_long, read_long_8
from schemas._codegen import SourceBuilder
from schemas._encoder import UnsupportedSchemaError

__all__ = [
    "DecodeError",
    "Decoder",
    "TupleDecoder",
    "UnsupportedSchemaError",
    "compile_decoder",
    "compile_tuple_decoder",
]

#: Reads one record from ``data`` (``bytes``) at a position; returns it and the position after it.
Decoder = Callable[[bytes, int], tuple[dict[str, Any], int]]

_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}
)
# Writer type → reader types it is promoted to (Avro 1.11 specification, "Schema Resolution").
_PROMOTIONS: Final[Mapping[str, frozenset[str]]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class DecodeError(ValueError):
    """A body that is not a valid encoding of its schema; ``path`` names the field when known."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"field {path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


# --- the slow side of each type: what the inlined fast paths do not cover ------------------------


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of at most 10 bytes and 64 bits at ``pos``
    (:func:`schemas._avro.read_long`); ``IndexError`` at the end."""
    value, end = read_long(data, pos)
    if end < 0:
        if end == TRUNCATED:
            raise IndexError("varint beyond the end of the body")
        if end == TOO_LONG:
            raise DecodeError("", "varint longer than 10 bytes")
        raise DecodeError("", "varint beyond 64 bits")
    return value, end


def _read_int(data: bytes, pos: int, path: str) -> tuple[int, int]:
    value, pos = _read_long(data, pos)
    if not _INT_MIN <= value <= _INT_MAX:
        raise DecodeError(path, f"int {value} outside 32 bits")
    return value, pos


def _read_index(data: bytes, pos: int, count: int, path: str, what: str) -> tuple[int, int]:
    """An enum symbol or union branch index below ``count``, returned doubled (as the one-byte
    varint of a small index reads), so that generated code dispatches on one value."""
    index, pos = _read_long(data, pos)
    if not 0 <= index < count:
        raise DecodeError(path, f"{what} index {index} not in [0, {count})")
    return index << 1, pos


def _bad_index(raw: int, count: int, path: str, what: str) -> DecodeError:
    index = (raw >> 1) ^ -(raw & 1)
    return DecodeError(path, f"{what} index {index} not in [0, {count})")


def _bad_boolean(value: int, path: str) -> DecodeError:
    return DecodeError(path, f"boolean byte {value:#04x}, expected 0x00 or 0x01")


def _read_epoch_micros(data: bytes, pos: int) -> tuple[int, int]:
    """A ``long``, with an 8-byte varint (a timestamp of 1978 to 3111) read in one unpack."""
    n, end = read_long_8(data, pos)
    if end >= 0:
        return n, end
    return _read_long(data, pos)


def _read_timestamp(data: bytes, pos: int) -> tuple[datetime, int]:
    """A ``timestamp-micros``: fastavro's ``epoch + timedelta(microseconds=n)``, exact."""
    n, pos = _read_epoch_micros(data, pos)
    return _EPOCH + timedelta(0, 0, n), pos


def _read_micros(data: bytes, pos: int, epoch: int) -> tuple[int, int]:
    """A ``timestamp-micros`` as int microseconds since ``epoch`` (itself in µs since 1970);
    ``OverflowError`` beyond ``datetime``'s range, as :func:`_read_timestamp`."""
    n, pos = _read_epoch_micros(data, pos)
    if not _MIN_MICROS <= n <= _MAX_MICROS:
        raise OverflowError(f"timestamp-micros {n} beyond datetime's range")
    return n - epoch, pos


def _read_size(data: bytes, pos: int, path: str) -> tuple[int, int]:
    """The length of a string or bytes value, which must fit in what is left of ``data``."""
    size, pos = _read_long(data, pos)
    if size < 0:
        raise DecodeError(path, f"negative length {size}")
    if pos + size > len(data):
        raise DecodeError(path, f"length {size} beyond the end of the body")
    return size, pos


def _read_string(data: bytes, pos: int, path: str) -> tuple[str, int]:
    size, pos = _read_size(data, pos, path)
    return data[pos : pos + size].decode(), pos + size


def _read_bytes(data: bytes, pos: int, path: str) -> tuple[bytes, int]:
    size, pos = _read_size(data, pos, path)
    return data[pos : pos + size], pos + size


def _block(data: bytes, pos: int, min_size: int, path: str) -> tuple[int, int]:
    """The item count of the next array or map block (0: the end), its byte size skipped when
    the count is negative. Items take ``min_size`` bytes or more: a count that cannot fit in what
    is left is an error at once rather than a long loop."""
    count, pos = _read_long(data, pos)
    if count < 0:
        count = -count
        _, pos = _read_long(data, pos)  # the block's size in bytes; fastavro ignores it too
    if count * min_size > len(data) - pos:
        raise DecodeError(path, f"block of {count} items beyond the end of the body")
    return count, pos


def _skip_block(data: bytes, pos: int, min_size: int, path: str) -> tuple[int, int]:
    """Like :func:`_block`, but a block with a byte size is jumped over whole (count 0 is then
    returned for it, -1 for the end)."""
    count, pos = _read_long(data, pos)
    if count == 0:
        return -1, pos
    if count < 0:
        size, pos = _read_long(data, pos)
        if size < 0 or pos + size > len(data):
            raise DecodeError(path, f"block of {size} bytes beyond the end of the body")
        return 0, pos + size
    if count * min_size > len(data) - pos:
        raise DecodeError(path, f"block of {count} items beyond the end of the body")
    return count, pos


def _check_end(end: int, data: bytes, path: str) -> None:
    if end > len(data):
        raise DecodeError(path, "value beyond the end of the body")


_HELPERS: Final[Mapping[str, object]] = {
    "_unpack_double": struct.Struct("<d").unpack_from,
    "_unpack_float": struct.Struct("<f").unpack_from,
    "_read_long": _read_long,
    "_read_int": _read_int,
    "_read_index": _read_index,
    "_bad_index": _bad_index,
    "_bad_boolean": _bad_boolean,
    "_read_timestamp": _read_timestamp,
    "_read_micros": _read_micros,
    "_read_size": _read_size,
    "_read_string": _read_string,
    "_read_bytes": _read_bytes,
    "_block": _block,
    "_skip_block": _skip_block,
    "_check_end": _check_end,
    "_deepcopy": copy.deepcopy,
    "DecodeError": DecodeError,
}


# --- schema inspection ---------------------------------------------------------------------------


def _unqualified(name: str) -> str:
    return name.rpartition(".")[2]


class _Schemas:
    """Named types of one parsed schema; ``resolve`` turns a reference into its definition."""

    def __init__(self, parsed: Mapping[str, Any]) -> None:
        self.named: Mapping[str, Any] = parsed.get("__named_schemas", {})

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            try:
                return self.named[schema]
            except KeyError:
                raise UnsupportedSchemaError(f"type {schema!r}") from None
        return schema


def _is_reference(schema: Any) -> bool:
    return isinstance(schema, str) and schema not in _PRIMITIVES


def _kind(schema: Any) -> str:
    """``null`` ... ``record``, ``union``; a logical type as ``<type>:<logicalType>``."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type")
    if not isinstance(kind, str):
        raise UnsupportedSchemaError(f"schema {schema!r}")
    logical = schema.get("logicalType")
    if logical is not None:
        return f"{kind}:{logical}"
    return kind


def _min_size(schema: Any, schemas: _Schemas, seen: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a value of ``schema`` can take."""
    schema = schemas.resolve(schema)
    kind = _kind(schema)
    if kind == "null":
        return 0
    if kind == "float":
        return 4
    if kind == "double":
        return 8
    if kind == "union":
        return 1 + min(_min_size(branch, schemas, seen) for branch in schema)
    if kind == "record":
        if schema["name"] in seen:
            return 0
        inner = seen | {schema["name"]}
        return sum(_min_size(f["type"], schemas, inner) for f in schema["fields"])
    return 1  # boolean, int, long, string, bytes, enum, array, map, timestamps


def _may_match(writer: Any, reader: Any, w: _Schemas, r: _Schemas) -> bool:
    """Whether fastavro could take ``reader`` as the branch for the union branch ``writer``:
    True unless their kinds clearly differ (conservative)."""
    w_kind = _kind(w.resolve(writer)).partition(":")[0]
    r_kind = _kind(r.resolve(reader)).partition(":")[0]
    return w_kind == r_kind or r_kind in _PROMOTIONS.get(w_kind, ()) or "union" in (w_kind, r_kind)


# --- code generation -----------------------------------------------------------------------------


class _Compiler(SourceBuilder):
    """Emits the body of ``def decode(data, pos)``; ``size`` is ``len(data)``."""

    def __init__(
        self,
        writer: _Schemas,
        reader: _Schemas,
        micros_epoch: int | None = None,
        fields: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(_HELPERS)
        self.w = writer
        self.r = reader
        self.micros_epoch = micros_epoch
        self.fields = fields

    # --- reading ---------------------------------------------------------------------------------

    def read(self, writer: Any, reader: Any, target: str, path: str, depth: int) -> None:
        """Emit code reading a value written with ``writer`` into the local ``target``, as
        ``reader`` sees it (``reader`` None: no resolution, the writer schema is read as is)."""
        if reader is not None and _is_reference(writer) and not isinstance(reader, str):
            raise UnsupportedSchemaError(f"{path or 'record'}: a named type read as a definition")
        writer = self.w.resolve(writer)
        w_kind = _kind(writer)
        if reader is not None:
            reader = self.r.resolve(reader)
            if reader == writer:
                reader = None  # as fastavro: equal schemas are read without resolution
        if reader is not None:
            r_kind = _kind(reader)
            if w_kind != r_kind:
                if r_kind in _PROMOTIONS.get(w_kind, ()):
                    self.promotion(w_kind, r_kind, target, path, depth)
                    return
                raise UnsupportedSchemaError(f"{path or 'record'}: {w_kind} read as {r_kind}")
        if w_kind == "union":
            self.union(writer, reader, target, path, depth)
        elif w_kind == "long:timestamp-micros":
            if self.micros_epoch is None:
                self.emit(depth, f"{target}, pos = _read_timestamp(data, pos)")
            else:
                epoch = self.constant(self.micros_epoch)
                self.emit(depth, f"{target}, pos = _read_micros(data, pos, {epoch})")
        elif w_kind in _PRIMITIVES:
            self.primitive(w_kind, target, path, depth)
        elif ":" in w_kind:
            raise UnsupportedSchemaError(f"{path or 'record'}: logical type {w_kind}")
        elif w_kind == "record":
            self.record(writer, reader, target, path, depth)
        elif w_kind == "enum":
            self.enum(writer, reader, target, path, depth)
        elif w_kind == "array":
            self.array(writer, reader, target, path, depth)
        elif w_kind == "map":
            self.map(writer, reader, target, path, depth)
        else:
            raise UnsupportedSchemaError(f"{path or 'record'}: type {w_kind}")

    def primitive(self, kind: str, target: str, path: str, depth: int) -> None:
        emit = self.emit
        if kind == "null":
            emit(depth, f"{target} = None")
        elif kind == "boolean":
            emit(depth, f"{target} = data[pos]")
            emit(depth, f"if {target} == 0:")
            emit(depth + 1, f"{target} = False")
            emit(depth, f"elif {target} == 1:")
            emit(depth + 1, f"{target} = True")
            emit(depth, "else:")
            emit(depth + 1, f"raise _bad_boolean({target}, {path!r})")
            emit(depth, "pos += 1")
        elif kind in ("int", "long"):
            emit(depth, f"{target} = data[pos]")
            emit(depth, f"if {target} < 0x80:")
            emit(depth + 1, f"{target} = ({target} >> 1) ^ -({target} & 1)")
            emit(depth + 1, "pos += 1")
            emit(depth, "else:")
            if kind == "int":
                emit(depth + 1, f"{target}, pos = _read_int(data, pos, {path!r})")
            else:
                emit(depth + 1, f"{target}, pos = _read_long(data, pos)")
        elif kind in ("double", "float"):
            emit(depth, f"{target} = _unpack_{kind}(data, pos)[0]")
            emit(depth, f"pos += {8 if kind == 'double' else 4}")
        else:  # string, bytes: a length below 64 is one byte, an even one
            end = self.fresh("end")
            emit(depth, f"{end} = data[pos]")
            emit(depth, f"if {end} < 0x80 and not {end} & 1:")
            emit(depth + 1, f"{end} = pos + 1 + ({end} >> 1)")
            emit(depth + 1, f"if {end} > size:")
            emit(depth + 2, f"raise DecodeError({path!r}, 'length beyond the end of the body')")
            decode = ".decode()" if kind == "string" else ""
            emit(depth + 1, f"{target} = data[pos + 1:{end}]{decode}")
            emit(depth + 1, f"pos = {end}")
            emit(depth, "else:")
            emit(depth + 1, f"{target}, pos = _read_{kind}(data, pos, {path!r})")

    def promotion(self, w_kind: str, r_kind: str, target: str, path: str, depth: int) -> None:
        self.primitive(w_kind, target, path, depth)
        if r_kind in ("float", "double") and w_kind in ("int", "long"):
            self.emit(depth, f"{target} = float({target})")
        elif w_kind == "string":  # fastavro decodes, then encodes back
            self.emit(depth, f"{target} = {target}.encode()")
        elif w_kind == "bytes":
            self.emit(depth, f"{target} = {target}.decode()")
        # int → long and float → double: the same Python value

    def index(self, target: str, count: int, path: str, what: str, depth: int) -> None:
        """Read an index below ``count`` into ``target``, doubled (the raw one-byte varint)."""
        self.emit(depth, f"{target} = data[pos]")
        self.emit(depth, f"if {target} < 0x80:")
        self.emit(depth + 1, "pos += 1")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{target}, pos = _read_index(data, pos, {count}, {path!r}, {what!r})")

    def union(
        self, writer: list[Any], reader: list[Any] | None, target: str, path: str, depth: int
    ) -> None:
        if reader is not None:
            if len(reader) != len(writer):
                raise UnsupportedSchemaError(f"{path}: unions of different sizes")
            for i, branch in enumerate(writer):
                if any(_may_match(branch, earlier, self.w, self.r) for earlier in reader[:i]):
                    raise UnsupportedSchemaError(
                        f"{path}: branch {i} may resolve to an earlier one"
                    )
        branch = self.fresh("u")
        if all(_kind(self.w.resolve(b)).partition(":")[0] in _PRIMITIVES for b in writer):
            # Branches of a few lines (a measurement's ["null", "double"]): dispatch on the
            # index byte at once; a redundant or bad varint takes the slow path, which repeats
            # the branches.
            for i, schema in enumerate(writer):
                test = "not data[pos]" if i == 0 else f"data[pos] == {i << 1}"
                self.emit(depth, f"{'if' if i == 0 else 'elif'} {test}:")
                if schema == "double" and (reader is None or reader[i] == "double"):
                    self.emit(depth + 1, f"{target} = _unpack_double(data, pos + 1)[0]")
                    self.emit(depth + 1, "pos += 9")
                    continue
                self.emit(depth + 1, "pos += 1")
                self.read(schema, None if reader is None else reader[i], target, path, depth + 1)
            self.emit(depth, "else:")
            self.emit(
                depth + 1,
                f"{branch}, pos = _read_index(data, pos, {len(writer)}, {path!r}, 'union branch')",
            )
            for i, schema in enumerate(writer):
                self.emit(depth + 1, f"{'if' if i == 0 else 'elif'} {branch} == {i << 1}:")
                self.read(schema, None if reader is None else reader[i], target, path, depth + 2)
            self.emit(depth + 1, "else:")
            self.emit(depth + 2, "raise AssertionError('index checked by _read_index')")
            return
        self.index(branch, len(writer), path, "union branch", depth)
        for i, schema in enumerate(writer):
            self.emit(depth, f"{'if' if i == 0 else 'elif'} {branch} == {i << 1}:")
            self.read(schema, None if reader is None else reader[i], target, path, depth + 1)
        self.emit(depth, "else:")
        self.emit(depth + 1, f"raise _bad_index({branch}, {len(writer)}, {path!r}, 'union branch')")

    def enum(
        self,
        writer: dict[str, Any],
        reader: dict[str, Any] | None,
        target: str,
        path: str,
        depth: int,
    ) -> None:
        symbols = list(writer["symbols"])
        if reader is not None:
            self.check_names(writer, reader, path)
            if not set(symbols) <= set(reader["symbols"]):
                raise UnsupportedSchemaError(f"{path}: writer symbols the reader lacks")
        table = self.constant({index << 1: symbol for index, symbol in enumerate(symbols)})
        raw = self.fresh("e")
        self.index(raw, len(symbols), path, "enum symbol", depth)
        self.emit(depth, f"{target} = {table}.get({raw})")
        self.emit(depth, f"if {target} is None:")
        self.emit(depth + 1, f"raise _bad_index({raw}, {len(symbols)}, {path!r}, 'enum symbol')")

    def check_names(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> None:
        w_name, r_name = writer["name"], reader["name"]
        aliases = reader.get("aliases", [])
        if not (
            _unqualified(w_name) == _unqualified(r_name)
            or w_name in aliases
            or _unqualified(w_name) in aliases
        ):
            raise UnsupportedSchemaError(f"{path or 'record'}: {w_name} read as {r_name}")

    def record(
        self,
        writer: dict[str, Any],
        reader: dict[str, Any] | None,
        target: str,
        path: str,
        depth: int,
    ) -> None:
        name = writer["name"]
        if name in self.open_records:
            raise UnsupportedSchemaError(f"recursive record {name}")
        top = not self.open_records
        self.open_records.append(name)
        items: list[tuple[str, str]] = []
        if reader is None:
            for field in writer["fields"]:
                var = self.fresh("v")
                field_path = f"{path}.{field['name']}" if path else field["name"]
                self.read(field["type"], None, var, field_path, depth)
                items.append((field["name"], var))
        else:
            self.check_names(writer, reader, path)
            by_name = {f["name"]: f for f in reader["fields"]}
            by_alias = {alias: f for f in reader["fields"] for alias in f.get("aliases", [])}
            unmatched = dict(by_name)
            for field in writer["fields"]:
                field_path = f"{path}.{field['name']}" if path else field["name"]
                match = by_name.get(field["name"], by_alias.get(field["name"]))
                if match is None:
                    self.skip(field["type"], field_path, depth)
                    continue
                if match["name"] not in unmatched:
                    raise UnsupportedSchemaError(f"{field_path}: two writer fields for one")
                del unmatched[match["name"]]
                var = self.fresh("v")
                self.read(field["type"], match["type"], var, field_path, depth)
                items.append((match["name"], var))
            for field in unmatched.values():
                if "default" not in field:
                    raise UnsupportedSchemaError(f"{path}.{field['name']}: no value, no default")
                items.append((field["name"], self.default(field["default"])))
        if top and self.fields is not None:
            values = dict(items)
            missing = [f for f in self.fields if f not in values]
            if missing:
                raise UnsupportedSchemaError(f"{name}: no field {', '.join(missing)}")
            # Every field is read (and checked) all the same: the same bodies are errors.
            self.emit(depth, f"{target} = ({''.join(values[f] + ', ' for f in self.fields)})")
        else:
            pairs = ", ".join(f"{field!r}: {value}" for field, value in items)
            self.emit(depth, f"{target} = {{{pairs}}}")
        self.open_records.pop()

    def default(self, value: object) -> str:
        if value is None or isinstance(value, bool | int | float | str | bytes):
            return self.constant(value)
        if value == {} and type(value) is dict:
            return "{}"
        if value == [] and type(value) is list:
            return "[]"
        return f"_deepcopy({self.constant(value)})"

    def blocks(self, depth: int, path: str, item_min: int) -> tuple[str, int]:
        """Open the loop over the items of an array or map; returns (count var, body depth)."""
        count = self.fresh("n")
        self.emit(depth + 1, f"{count}, pos = _block(data, pos, {item_min}, {path!r})")
        self.emit(depth + 1, f"while {count}:")
        self.emit(depth + 2, f"for _ in range({count}):")
        return count, depth + 3

    def array(
        self,
        writer: dict[str, Any],
        reader: dict[str, Any] | None,
        target: str,
        path: str,
        depth: int,
    ) -> None:
        item_min = _min_size(writer["items"], self.w)
        if item_min == 0:
            raise UnsupportedSchemaError(f"{path}: array of items that may take no bytes")
        emit = self.emit
        item = self.fresh("item")
        emit(depth, f"{target} = []")
        emit(depth, "if data[pos] == 0:")
        emit(depth + 1, "pos += 1")
        emit(depth, "else:")
        count, inner = self.blocks(depth, path, item_min)
        self.read(writer["items"], None if reader is None else reader["items"], item, path, inner)
        emit(inner, f"{target}.append({item})")
        emit(depth + 2, f"{count}, pos = _block(data, pos, {item_min}, {path!r})")

    def map(
        self,
        writer: dict[str, Any],
        reader: dict[str, Any] | None,
        target: str,
        path: str,
        depth: int,
    ) -> None:
        item_min = 1 + _min_size(writer["values"], self.w)
        emit = self.emit
        key, item = self.fresh("key"), self.fresh("item")
        emit(depth, f"{target} = {{}}")
        emit(depth, "if data[pos] == 0:")
        emit(depth + 1, "pos += 1")
        emit(depth, "else:")
        count, inner = self.blocks(depth, path, item_min)
        self.primitive("string", key, path, inner)
        self.read(writer["values"], None if reader is None else reader["values"], item, path, inner)
        emit(inner, f"{target}[{key}] = {item}")
        emit(depth + 2, f"{count}, pos = _block(data, pos, {item_min}, {path!r})")

    # --- skipping a writer field the reader does not have ------------------------------------

    def skip(self, schema: Any, path: str, depth: int) -> None:
        """Emit code moving ``pos`` past a value of ``schema``; as fastavro's skip, a skipped
        string is not checked for UTF-8, nor a skipped block's content."""
        schema = self.w.resolve(schema)
        kind = _kind(schema)
        emit = self.emit
        if kind in ("long:timestamp-micros", "int", "long"):
            emit(depth, "_, pos = _read_long(data, pos)")
        elif ":" in kind:
            raise UnsupportedSchemaError(f"{path}: logical type {kind}")
        elif kind == "null":
            emit(depth, "pass")
        elif kind in ("boolean", "double", "float"):
            if kind == "boolean":
                emit(depth, "if data[pos] > 1:")
                emit(depth + 1, f"raise _bad_boolean(data[pos], {path!r})")
            emit(depth, f"pos += {dict(boolean=1, float=4, double=8)[kind]}")
            emit(depth, f"_check_end(pos, data, {path!r})")
        elif kind in ("string", "bytes"):
            length = self.fresh("length")
            emit(depth, f"{length}, pos = _read_size(data, pos, {path!r})")
            emit(depth, f"pos += {length}")
        elif kind == "enum":
            raw, symbols = self.fresh("e"), len(schema["symbols"])
            self.index(raw, symbols, path, "enum symbol", depth)
            emit(depth, f"if {raw} >= {symbols << 1} or {raw} & 1:")
            emit(depth + 1, f"raise _bad_index({raw}, {symbols}, {path!r}, 'enum symbol')")
        elif kind == "union":
            branch = self.fresh("u")
            self.index(branch, len(schema), path, "union branch", depth)
            for i, branch_schema in enumerate(schema):
                emit(depth, f"{'if' if i == 0 else 'elif'} {branch} == {i << 1}:")
                self.skip(branch_schema, path, depth + 1)
            emit(depth, "else:")
            emit(depth + 1, f"raise _bad_index({branch}, {len(schema)}, {path!r}, 'union branch')")
        elif kind == "record":
            if schema["name"] in self.open_records:
                raise UnsupportedSchemaError(f"recursive record {schema['name']}")
            self.open_records.append(schema["name"])
            emit(depth, "pass")
            for field in schema["fields"]:
                self.skip(field["type"], f"{path}.{field['name']}", depth)
            self.open_records.pop()
        elif kind in ("array", "map"):
            inner_schema = schema["items"] if kind == "array" else schema["values"]
            item_min = _min_size(inner_schema, self.w) + (1 if kind == "map" else 0)
            if item_min == 0:
                raise UnsupportedSchemaError(f"{path}: array of items that may take no bytes")
            count = self.fresh("n")
            emit(depth, f"{count}, pos = _skip_block(data, pos, {item_min}, {path!r})")
            emit(depth, f"while {count} >= 0:")
            emit(depth + 1, f"for _ in range({count}):")
            if kind == "map":
                self.skip("string", path, depth + 2)
            self.skip(inner_schema, path, depth + 2)
            emit(depth + 1, f"{count}, pos = _skip_block(data, pos, {item_min}, {path!r})")
        else:
            raise UnsupportedSchemaError(f"{path}: type {kind}")


def compile_decoder(
    writer: dict[str, Any],
    reader: dict[str, Any] | None = None,
    *,
    micros_epoch: int | None = None,
) -> Decoder:
    """Compile a decoder of records written with the fastavro-parsed record schema ``writer``
    and read as ``reader`` sees them (None: as written), as ``fastavro.schemaless_reader(fo,
    writer, reader)`` reads them.

    ``micros_epoch`` given (µs since 1970: 0 for the Unix epoch), ``timestamp-micros`` values are
    read as int microseconds since that instant instead of aware ``datetime`` objects (the same
    values are errors: those beyond ``datetime``'s range raise ``OverflowError``); all else is
    read as fastavro reads it.

    Raises :class:`UnsupportedSchemaError` when the pair uses what this module does not handle.
    """
    return cast(Decoder, _compile(writer, reader, micros_epoch, None))


#: Reads one record at a position as a tuple of some of its fields; returns it and the position
#: after it.
TupleDecoder = Callable[[bytes, int], tuple[tuple[Any, ...], int]]


def compile_tuple_decoder(
    writer: dict[str, Any],
    reader: dict[str, Any] | None,
    fields: tuple[str, ...],
    *,
    micros_epoch: int | None = None,
) -> TupleDecoder:
    """Like :func:`compile_decoder`, but the record comes back as the tuple of the values of its
    (reader's) top-level ``fields``, in that order, instead of a dict: what the dict would hold
    under those keys. Every field is still read and checked, so the same bodies are errors.

    For consumers that turn a record into a row (the TimescaleDB sink): no dict of ~35 keys built
    and taken apart again per record. :class:`UnsupportedSchemaError` also for a field the
    record lacks.
    """
    return cast(TupleDecoder, _compile(writer, reader, micros_epoch, tuple(fields)))


def _compile(
    writer: dict[str, Any],
    reader: dict[str, Any] | None,
    micros_epoch: int | None,
    fields: tuple[str, ...] | None,
) -> Callable[[bytes, int], tuple[Any, int]]:
    if not isinstance(writer, dict) or writer.get("type") != "record":
        raise UnsupportedSchemaError("only record schemas are compiled")
    if reader is not None and (not isinstance(reader, dict) or reader.get("type") != "record"):
        raise UnsupportedSchemaError("only record schemas are compiled")
    compiler = _Compiler(
        _Schemas(writer), _Schemas(writer if reader is None else reader), micros_epoch, fields
    )
    compiler.read(writer, reader, "record", "", 1)
    source = "\n".join(
        [
            "def decode(data, pos):",
            "    size = len(data)",
            *compiler.lines,
            "    return record, pos",
        ]
    )
    namespace = compiler.globals
    # The source is generated above from parsed schemas: names go through repr(), values are
    # passed as globals, never as text.
    exec(compile(source, f"<avro decoder {writer['name']}>", "exec"), namespace)  # noqa: S102
    decoder = cast(Callable[[bytes, int], tuple[Any, int]], namespace["decode"])
    decoder.__doc__ = f"Read a {writer['name']} record at ``pos``: ``(record, end position)``."
    return decoder
