"""CSV exports written by PostgreSQL: ``COPY (SELECT …) TO STDOUT (FORMAT csv)``.

The Python writer (:func:`sinks.opendata._exports.stream_export`) loads every value into a
Python object and formats it again; PostgreSQL can write the same text itself, several times
faster (``python -m benchmarks publish``). The bytes must stay those of the Python writer
(:func:`sinks.opendata._format.csv_value` under :mod:`csv` with ``\\r\\n`` line ends), so each
column is wrapped in a SQL expression that formats its value the way Python does:

- ``timestamptz``: :meth:`datetime.isoformat` in the session's ``TimeZone`` (set to the request's
  ``timezone``): ``2026-01-01T10:00:00+01:00``, with ``.ffffff`` only when there are
  microseconds;
- ``float8``/``float4``/non-integral ``numeric``: Python's ``repr`` of a float. PostgreSQL 12+
  prints the same shortest round-trip digits (with ``extra_float_digits`` > 0) but writes
  ``1`` where Python writes ``1.0`` and uses an exponent from 1e15 where Python waits for 1e16;
  NaN and infinities are empty cells (JSON has no such numbers, and the CSV follows JSON);
- integral ``numeric``: an integer (``5.00`` → ``5``), as :func:`json_value` does;
- ``boolean``: ``True``/``False``; ``date``: ``YYYY-MM-DD``;
- ``geo_point_2d`` (``jsonb``): ``lat, lon`` with each number as Python prints what
  :func:`json.loads` makes of it;
- an empty text is written like a null (unquoted), except in a one-column export, where Python
  quotes the lone empty cell (``""``) and so does PostgreSQL once nulls are made empty strings.

Any other column type (``geo_shape``, whose GeoJSON text Python re-serialises compactly, naive
timestamps, …), a delimiter PostgreSQL refuses (not one byte), and the rows go through the Python
writer instead. PostgreSQL ends lines with ``\\n``: each COPY data message is one row, so its
last byte becomes ``\\r\\n`` while a newline inside a quoted value stays as Python writes it.
The header is written by the Python writer too (PostgreSQL's ``HEADER`` would print the
column aliases, truncated to 63 bytes).

Known differences: PostgreSQL quotes a first-column value that is exactly ``\\.`` (its end-of-data
marker), Python does not; a float aggregate (``avg``, ``sum`` of doubles) may differ in its last
digit, the rows being added in the order of another plan (:func:`set_copy_session`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from psycopg import AsyncConnection, sql

from sinks.opendata._catalog import FieldType

__all__ = ["cell_sql", "copy_csv_rows", "copy_query", "copy_statement", "set_copy_session"]

#: PostgreSQL type OIDs (``pg_type.oid``, fixed for built-in types).
_BOOL, _INT8, _INT2, _INT4, _TEXT, _JSONB = 16, 20, 21, 23, 25, 3802
_FLOAT4, _FLOAT8, _VARCHAR, _DATE, _TIMESTAMPTZ, _NUMERIC = 700, 701, 1043, 1082, 1184, 1700

#: Bytes gathered before they are sent on (COPY gives one row at a time).
_CHUNK_BYTES = 1 << 16


def _double(x: sql.Composable) -> sql.Composable:
    """A ``float8`` expression as Python's ``str(float)``, null for NaN and infinities.

    Below 1e15 (and from 1e16, where every double is an integer written with an exponent by
    both) the two differ only by Python's ``.0`` after an integer, so the common case costs
    one ``float8`` to text conversion."""
    return sql.SQL(
        "(CASE WHEN {x} = 'NaN'::float8 OR abs({x}) = 'Infinity'::float8 THEN NULL"
        " WHEN abs({x}) < 1e15 THEN (CASE WHEN {x} = trunc({x}) THEN {x}::text || '.0'"
        " ELSE {x}::text END)"
        " WHEN abs({x}) >= 1e16 THEN {x}::text"
        " ELSE (CASE WHEN {x} < 0 THEN '-' ELSE '' END)"
        " || rpad(left(replace(split_part(ltrim({x}::text, '-'), 'e', 1), '.', ''), 16), 16, '0')"
        " || '.' || coalesce(nullif(substr("
        "replace(split_part(ltrim({x}::text, '-'), 'e', 1), '.', ''), 17), ''), '0') END)"
    ).format(x=x)


def _json_number(j: sql.Composable) -> sql.Composable:
    """One member of a ``jsonb`` point as Python prints what ``json.loads`` gives for it."""
    return sql.SQL(
        "(CASE WHEN {j} IS NULL OR jsonb_typeof({j}) = 'null' THEN 'None'"
        " WHEN jsonb_typeof({j}) = 'number' AND {j}::text ~ '[.eE]' THEN {d}"
        " WHEN jsonb_typeof({j}) = 'boolean' THEN"
        " (CASE WHEN {j}::text = 'true' THEN 'True' ELSE 'False' END)"
        " ELSE {j} #>> '{{}}' END)"
    ).format(j=j, d=_double(sql.SQL("({}::text::float8)").format(j)))


def cell_sql(oid: int, field_type: FieldType, x: sql.Composable) -> sql.Composable | None:
    """``x`` (a column of type ``oid``) as the Python writer's cell text, or None if this type
    has no rule here."""
    if oid in (_TEXT, _VARCHAR) and field_type not in ("geo_point_2d", "geo_shape"):
        return sql.SQL("nullif({}, '')").format(x)
    if oid in (_INT2, _INT4, _INT8):
        return sql.SQL("({}::text)").format(x)
    if oid == _BOOL:
        return sql.SQL("(CASE WHEN {x} THEN 'True' WHEN NOT {x} THEN 'False' END)").format(x=x)
    if oid == _FLOAT8:
        return _double(x)
    if oid == _FLOAT4:
        # psycopg reads float4 from its text, so Python holds the double nearest that text.
        return _double(sql.SQL("({}::text::float8)").format(x))
    if oid == _NUMERIC:
        return sql.SQL(
            "(CASE WHEN {x} = 'NaN'::numeric THEN 'nan' WHEN {x} = trunc({x}) THEN trunc({x})::text"
            " ELSE {d} END)"
        ).format(x=x, d=_double(sql.SQL("({}::float8)").format(x)))
    if oid == _DATE:
        return sql.SQL("to_char({}, 'YYYY-MM-DD')").format(x)
    if oid == _TIMESTAMPTZ:
        return sql.SQL(
            "to_char({x}, CASE WHEN date_trunc('second', {x}) = {x}"
            " THEN 'YYYY-MM-DD\"T\"HH24:MI:SSTZH:TZM'"
            " ELSE 'YYYY-MM-DD\"T\"HH24:MI:SS.USTZH:TZM' END)"
        ).format(x=x)
    if oid == _JSONB and field_type == "geo_point_2d":
        return sql.SQL(
            "(CASE WHEN jsonb_typeof({x}) = 'object' THEN {lat} || ', ' || {lon} END)"
        ).format(
            x=x,
            lat=_json_number(sql.SQL("({} -> 'lat')").format(x)),
            lon=_json_number(sql.SQL("({} -> 'lon')").format(x)),
        )
    return None


def copy_query(
    query: sql.Composable,
    oids: Sequence[int],
    field_types: Sequence[FieldType],
    delimiter: str,
) -> sql.Composed | None:
    """The ``COPY`` statement writing ``query``'s rows as the Python writer would, or None when
    one of its columns (or the delimiter) has no rule here.

    ``query`` stays as compiled (the ODSQL select, where, group_by, order_by, limit) and is read
    as a subquery whose columns are ``c0``, ``c1``…; the outer SELECT only formats them, so
    PostgreSQL keeps the subquery's order (it pulls the subquery up into one plan)."""
    if len(delimiter.encode()) != 1:
        return None
    cells: list[sql.Composable] = []
    for i, (oid, field_type) in enumerate(zip(oids, field_types, strict=True)):
        cell = cell_sql(oid, field_type, sql.SQL("q.{}").format(sql.Identifier(f"c{i}")))
        if cell is None:
            return None
        if len(oids) == 1:
            # Python quotes a lone empty cell; PostgreSQL quotes an empty non-null string.
            cell = sql.SQL("coalesce({}, '')").format(cell)
        cells.append(cell)
    return sql.SQL("COPY (SELECT {} FROM ({}) AS q) TO STDOUT (FORMAT csv, DELIMITER {})").format(
        sql.SQL(", ").join(cells), query, sql.Literal(delimiter)
    )


async def set_copy_session(conn: AsyncConnection[Any], timezone: str) -> None:
    """The transaction's settings for a COPY export: the request's ``TimeZone``, shortest float
    text, and no parallel plan, as for the Python writer's named cursor (PostgreSQL never runs
    a cursor's query in parallel, and parallel workers add floats in another order).

    A float aggregate can still differ in its last digit: a cursor is planned for its first
    rows, so ``avg`` of a float column may add the rows in another order than the COPY's plan
    (seen on a month of hourly levels per sensor: ``59.841666666666676`` against
    ``59.84166666666667``). The records endpoint, planned like the COPY, already answered the
    second; only the rows' own values are guaranteed byte for byte."""
    await conn.execute(
        "SELECT set_config('TimeZone', %s, true), set_config('extra_float_digits', '1', true),"
        " set_config('max_parallel_workers_per_gather', '0', true)",
        [timezone],
    )


async def copy_statement(
    conn: AsyncConnection[Any],
    query: sql.Composable,
    params: Sequence[Any],
    field_types: Sequence[FieldType],
    delimiter: str,
) -> sql.Composed | None:
    """:func:`copy_query` for ``query`` once the server has said its column types (one
    ``LIMIT 0`` round trip, in the caller's transaction)."""
    cursor = await conn.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query), params)
    oids = [d.type_code for d in cursor.description or ()]
    return copy_query(query, oids, field_types, delimiter)


async def copy_csv_rows(
    conn: AsyncConnection[Any], statement: sql.Composed, params: Sequence[Any]
) -> AsyncIterator[tuple[bytes, int]]:
    """The rows of ``statement`` with ``\\r\\n`` line ends, in chunks of about 64 KiB, each with
    its row count."""
    async with conn.cursor().copy(statement, params) as copy:
        parts: list[Any] = []
        size = 0
        while True:
            row = await copy.read()
            if row:
                parts.append(row)
                size += len(row)
                if size < _CHUNK_BYTES:
                    continue
            if not parts:
                return
            data = b"".join(parts)
            if data.count(b"\n") == len(parts):
                data = data.replace(b"\n", b"\r\n")
            else:  # a quoted value holds a newline: only each row's last byte is a line end
                data = b"".join(bytes(p[:-1]) + b"\r\n" for p in parts)
            yield data, len(parts)
            parts.clear()
            size = 0
            if not row:
                return
