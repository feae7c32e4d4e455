"""The older OpenDataSoft search API (v1) that many existing reusers still call.

``GET /api/records/1.0/search/?dataset=…&q=…&rows=…&start=…&sort=…&refine.<field>=…&
exclude.<field>=…&facet=…`` answers the v1 shape: ``nhits``, ``parameters``, ``records`` (each
with ``datasetid``, ``recordid``, ``fields`` without null values, ``geometry`` and
``record_timestamp``) and ``facet_groups``. In v1, a ``geo_point_2d`` field is ``[lat, lon]``
(latitude first), unlike v2.1's ``{"lon", "lat"}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from sinks.opendata._format import json_value
from sinks.opendata._query import build_v1_search
from sinks.opendata._routes_explore import dataset_or_404
from sinks.opendata._state import ApiError, Publication, publication

__all__ = ["router"]

router = APIRouter(prefix="/api/records/1.0", tags=["Search API v1"])


def _prefixed(request: Request, prefix: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith(prefix):
            found.setdefault(name[len(prefix) :], []).append(value)
    return found


def _record_id(dataset_id: str, values: Sequence[Any]) -> str:
    """A stable id per row (the portal's is a SHA-1 hex digest too)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(dataset_id.encode())
    digest.update(orjson.dumps(list(values), default=str))
    return digest.hexdigest()


@router.get("/search/", summary="v1 search: full text, refinements, facets")
async def search(
    request: Request,
    state: Annotated[Publication, Depends(publication)],
    dataset: Annotated[str | None, Query()] = None,
    q: Annotated[str | None, Query()] = None,
    rows: int = 10,
    start: int = 0,
    sort: Annotated[str | None, Query()] = None,
    facet: Annotated[list[str] | None, Query()] = None,
    fields: Annotated[str | None, Query()] = None,
    timezone: Annotated[str | None, Query()] = None,
    lang: Annotated[str | None, Query()] = None,
) -> Response:
    if not dataset:
        raise ApiError(400, "InvalidRESTParameterError", "Missing dataset API parameter.")
    chosen = dataset_or_404(state, dataset)
    tz_name = timezone or "UTC"
    compiled = build_v1_search(
        chosen,
        q=q,
        rows=rows,
        start=start,
        sort=sort,
        refine=_prefixed(request, "refine."),
        exclude=_prefixed(request, "exclude."),
        facets=tuple(facet or ()),
        fields=None if fields is None else [f.strip() for f in fields.split(",") if f.strip()],
        timezone=tz_name,
    )
    tz = ZoneInfo(compiled.timezone)
    async with state.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT set_config('TimeZone', %s, true)", [compiled.timezone])
        cursor = await conn.execute(compiled.count_query, compiled.count_params)
        counted = await cursor.fetchone()
        cursor = await conn.execute(compiled.query, compiled.params)
        rows_found = await cursor.fetchall()
        facet_rows = []
        for facet_query in compiled.facets:
            cursor = await conn.execute(facet_query.query, facet_query.params)
            facet_rows.append((facet_query, await cursor.fetchall()))
    names = [(c.name, c.type) for c in compiled.columns]
    geo = chosen.geo_field
    now = datetime.now(UTC).isoformat()
    records = []
    for row in rows_found:
        values = {
            name: json_value(value, kind, tz)
            for (name, kind), value in zip(names, row, strict=True)
        }
        record: dict[str, Any] = {
            "datasetid": chosen.id,
            "recordid": _record_id(chosen.id, row),
            "fields": {},
            "record_timestamp": values.get(chosen.timestamp_field or "", now) or now,
        }
        for name, kind in names:
            value = values[name]
            if value is None:
                continue
            if kind == "geo_point_2d" and isinstance(value, dict):
                point = [value.get("lat"), value.get("lon")]
                record["fields"][name] = point
                if name == geo:
                    record["geometry"] = {"type": "Point", "coordinates": point[::-1]}
            else:
                record["fields"][name] = value
        records.append(record)
    body = {
        "nhits": 0 if counted is None else int(counted[0]),
        "parameters": {
            "dataset": chosen.id,
            "rows": compiled.rows,
            "start": compiled.start,
            "format": "json",
            "timezone": compiled.timezone,
            **({"q": q} if q else {}),
            **({"sort": [sort]} if sort else {}),
            **({"facet": list(facet)} if facet else {}),
        },
        "records": records,
    }
    if compiled.facets:
        body["facet_groups"] = [
            {
                "name": facet_query.field,
                "facets": [
                    {
                        "name": str(json_value(value, facet_query.value_type, tz)),
                        "path": str(json_value(value, facet_query.value_type, tz)),
                        "count": int(count),
                        "state": "displayed",
                    }
                    for value, count in found
                ],
            }
            for facet_query, found in facet_rows
        ]
    return Response(orjson.dumps(body), media_type="application/json")
