"""Does each dataset's view have exactly its fields? Checked against the database's catalogue.

A dataset's fields (``_datasets.py`` or a ``datasets_file``) and its view's columns (the sink's
migrations, or an operator's own view) are written separately; a missing column or a wrong type
would otherwise surface as an SQL error on some request. The API can run this at start and the
tests run it on the built-in catalogue. Columns whose names start with ``_`` are hidden (the
live feed's change position) and not compared.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from sinks.opendata._catalog import Catalog, FieldType

__all__ = ["OPENDATA_SCHEMA", "PG_TYPES", "check_views"]

#: The schema every dataset view lives in (migration 0003_opendata.sql).
OPENDATA_SCHEMA: Final = "opendata"

#: The PostgreSQL types (``format_type`` spelling) a column of each portal type may have.
PG_TYPES: Final[dict[FieldType, frozenset[str]]] = {
    "text": frozenset({"text", "character varying"}),
    "int": frozenset({"smallint", "integer", "bigint"}),
    "double": frozenset({"double precision", "real"}),
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"timestamp with time zone"}),
    "geo_point_2d": frozenset({"jsonb"}),
    "geo_shape": frozenset({"jsonb"}),
}

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, NULL)
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid
WHERE n.nspname = %s AND c.relkind IN ('v', 'm', 'r') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""


async def check_views(conn: psycopg.AsyncConnection[Any], catalog: Catalog) -> list[str]:
    """Every mismatch between the catalogue and the views, one sentence each (empty: none).

    Reads only ``pg_catalog``, so any role may run it; a view the role cannot read still shows.
    """
    async with conn.cursor() as cursor:
        await cursor.execute(_COLUMNS, (OPENDATA_SCHEMA,))
        rows = await cursor.fetchall()
    views: dict[str, dict[str, str]] = {}
    for view, column, pg_type in rows:
        views.setdefault(str(view), {})[str(column)] = str(pg_type)
    problems: list[str] = []
    for dataset in catalog:
        columns = views.get(dataset.view)
        where = f"dataset {dataset.id!r} (view {OPENDATA_SCHEMA}.{dataset.view})"
        if columns is None:
            problems.append(f"{where}: the view does not exist")
            continue
        visible = {name: t for name, t in columns.items() if not name.startswith("_")}
        for field in dataset.fields:
            pg_type = visible.get(field.name)
            if pg_type is None:
                problems.append(f"{where}: no column for field {field.name!r}")
            elif pg_type not in PG_TYPES[field.type]:
                problems.append(
                    f"{where}: field {field.name!r} is {field.type} but the column is {pg_type}"
                )
        names = {field.name for field in dataset.fields}
        problems.extend(
            f"{where}: column {column!r} is not a field (hide it with a leading _)"
            for column in visible
            if column not in names
        )
    return problems
