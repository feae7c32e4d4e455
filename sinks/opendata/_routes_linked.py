"""Linked-data routes: the DCAT-AP catalogue and the NGSI-LD entities.

DCAT-AP (harvested by national and European portals):

* ``GET /api/explore/v2.1/catalog/exports/dcat``: Turtle by default; ``?format=turtle|jsonld|
  rdfxml`` chooses, otherwise the ``Accept`` header does (``text/turtle``,
  ``application/ld+json``, ``application/rdf+xml``; anything else gets Turtle).
* ``GET /api/explore/v2.1/catalog/exports/ttl`` and ``.../exports/rdf``: Turtle and RDF/XML
  under the names OpenDataSoft portals give their catalogue exports.

NGSI-LD (ETSI GS CIM 009):

* "Query Entities", ``GET /ngsi-ld/v1/entities``: ``type`` (one or more comma-separated entity
  type names, short names only) and/or ``id`` (comma-separated entity ids), ``limit`` (default
  20, at most 1000; 0 with ``count=true`` for the count only), ``offset``, ``count=true`` (the
  ``NGSILD-Results-Count`` header), ``options=keyValues`` or ``format=simplified`` (the
  key-values form).
* "Retrieve Entity", ``GET /ngsi-ld/v1/entities/<id>``: 404 ``ResourceNotFound`` when the id
  names no current entity.

The answer is ``application/ld+json`` with each entity's ``@context`` when ``Accept`` asks for
it, else ``application/json`` with the context in a ``Link`` header. An entity is the current
state of its sensor or site: the newest row of the last :data:`CURRENT_WITHIN`. Types from
different Smart Data Models domains define some attributes differently (``dateObservedFrom``,
``capacity``), so one ``Link`` header cannot serve them together: mixing them needs
``application/ld+json``. Errors are ProblemDetails bodies with the NGSI-LD error types;
parameters the server does not implement (``q``, ``attrs``, geo-queries…) are refused rather
than ignored, since ignoring a filter would answer a different question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg import sql
from psycopg.rows import dict_row

from sinks.opendata._catalog import Catalog
from sinks.opendata._dcat import JSONLD_CONTEXT, catalog_graph
from sinks.opendata._ngsild import (
    CORE_CONTEXT,
    ENTITY_TYPES,
    EntitySource,
    EntityType,
    id_key,
    key_values,
    problem_details,
)
from sinks.opendata._state import ApiError, Publication, publication

__all__ = ["CURRENT_WITHIN", "RDF_FORMATS", "negotiate", "router"]

router = APIRouter(tags=["Linked data (DCAT-AP, NGSI-LD)"])

#: rdflib serializer and media type of each DCAT output format.
RDF_FORMATS: dict[str, tuple[str, str]] = {
    "turtle": ("turtle", "text/turtle"),
    "jsonld": ("json-ld", "application/ld+json"),
    "rdfxml": ("xml", "application/rdf+xml"),
}

#: Entities are current observations: a sensor or site without a row this recent has none.
CURRENT_WITHIN = timedelta(days=2)
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 1000
_JSON = "application/json"
_JSON_LD = "application/ld+json"
#: Query Entities parameters of the NGSI-LD API this server does not implement.
_UNSUPPORTED = (
    "idPattern",
    "attrs",
    "pick",
    "omit",
    "q",
    "scopeQ",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "csf",
    "lang",
    "datasetId",
)


def negotiate(accept: str | None, offered: Sequence[str]) -> str | None:
    """The offered media type the ``Accept`` header prefers (RFC 9110 section 12.5.1: the
    highest quality, then the most specific range; ties go to the earlier offer), the first
    offer when there is no header, None when the header accepts none of them."""
    if accept is None or not accept.strip():
        return offered[0]
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for position, media_type in enumerate(offered):
        kind, _, subtype = media_type.partition("/")
        quality: tuple[float, int] | None = None
        for media_range in accept.split(","):
            name, *params = (p.strip() for p in media_range.split(";"))
            range_kind, _, range_subtype = name.lower().partition("/")
            if (range_kind, range_subtype) == (kind, subtype):
                specificity = 2
            elif range_kind == kind and range_subtype == "*":
                specificity = 1
            elif (range_kind, range_subtype) == ("*", "*"):
                specificity = 0
            else:
                continue
            q = _quality(params)
            if quality is None or specificity > quality[1]:
                quality = (q, specificity)
        if quality is None or quality[0] <= 0:
            continue
        rank = (quality[0], quality[1], -position)
        if best is None or rank > best:
            best, chosen = rank, media_type
    return chosen


def _quality(params: Sequence[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


# --- DCAT-AP ---------------------------------------------------------------------------------


def _dcat_response(state: Publication, output: str) -> Response:
    serializer, media_type = RDF_FORMATS[output]
    graph = catalog_graph(state.catalog, state.settings, state.public_url)
    options: dict[str, Any] = {"context": JSONLD_CONTEXT} if serializer == "json-ld" else {}
    body = graph.serialize(format=serializer, encoding="utf-8", **options)
    return Response(body, media_type=media_type)


@router.get(
    "/api/explore/v2.1/catalog/exports/dcat",
    summary="The catalogue in DCAT-AP (Turtle, JSON-LD or RDF/XML)",
)
async def dcat_catalog(
    request: Request,
    state: Annotated[Publication, Depends(publication)],
    format: str | None = None,
) -> Response:
    if format is not None:
        if format not in RDF_FORMATS:
            raise ApiError(
                400,
                "InvalidRESTParameterError",
                f"Invalid value for format API parameter: {format!r} was found but one of "
                f"{', '.join(RDF_FORMATS)} is expected.",
            )
        return _dcat_response(state, format)
    by_media_type = {media_type: name for name, (_, media_type) in RDF_FORMATS.items()}
    chosen = negotiate(request.headers.get("accept"), list(by_media_type))
    return _dcat_response(state, "turtle" if chosen is None else by_media_type[chosen])


@router.get("/api/explore/v2.1/catalog/exports/ttl", summary="The catalogue in DCAT-AP, Turtle")
async def dcat_turtle(state: Annotated[Publication, Depends(publication)]) -> Response:
    return _dcat_response(state, "turtle")


@router.get("/api/explore/v2.1/catalog/exports/rdf", summary="The catalogue in DCAT-AP, RDF/XML")
async def dcat_rdfxml(state: Annotated[Publication, Depends(publication)]) -> Response:
    return _dcat_response(state, "rdfxml")


# --- NGSI-LD ---------------------------------------------------------------------------------


class _BadRequestError(ValueError):
    """A query the NGSI-LD API answers with 400 BadRequestData."""


@dataclass(frozen=True, slots=True)
class _EntityQuery:
    types: tuple[EntityType, ...]
    #: Per type name, the id keys asked for (``a:b`` for a two-column key); None: any.
    ids: Mapping[str, tuple[str, ...]] | None
    limit: int
    offset: int
    count: bool
    simplified: bool


def _problem(status: int, error_type: str, title: str, detail: str) -> Response:
    return Response(
        orjson.dumps(problem_details(error_type, title, detail)),
        status_code=status,
        media_type="application/json",
    )


def _published(catalog: Catalog) -> dict[str, str]:
    """Entity type name -> id of the dataset it is read from, for the types the catalogue
    publishes (a type whose view is no dataset's is not served)."""
    by_view = {dataset.view: dataset.id for dataset in catalog}
    return {t.name: by_view[t.view] for t in ENTITY_TYPES.values() if t.view in by_view}


def _integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequestError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _BadRequestError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _entity_query(params: Mapping[str, str], published: Mapping[str, str]) -> _EntityQuery:
    for name in _UNSUPPORTED:
        if name in params:
            raise _BadRequestError(f"the query parameter {name} is not supported by this server")
    known = ", ".join(published) or "none"
    type_names = _list(params.get("type", ""))
    for name in type_names:
        if name not in published:
            raise _BadRequestError(f"unknown entity type {name!r}: this server publishes {known}")
    ids: dict[str, list[str]] | None = None
    if "id" in params:
        ids = {}
        for value in _list(params["id"]):
            parsed = id_key(value)
            if parsed is None:
                raise _BadRequestError(f"{value!r} is not an entity id (urn:ngsi-ld:<Type>:<id>)")
            ids.setdefault(parsed[0], []).append(":".join(parsed[1]))
        if not ids:
            raise _BadRequestError("id is empty")
        if not type_names:
            for name in ids:
                if name not in published:
                    raise _BadRequestError(
                        f"unknown entity type {name!r} in id: this server publishes {known}"
                    )
            type_names = list(ids)
    if not type_names:
        raise _BadRequestError("the query needs type (an entity type) or id (entity ids)")
    count = params.get("count", "false")
    if count not in ("true", "false"):
        raise _BadRequestError(f"count must be true or false, got {count!r}")
    limit = _integer(params, "limit", _DEFAULT_LIMIT, 0, _MAX_LIMIT)
    if limit == 0 and count != "true":
        raise _BadRequestError("limit=0 is only allowed with count=true")
    offset = _integer(params, "offset", 0, 0, 2**31 - 1)
    representation = {
        option for name in ("options", "format") for option in _list(params.get(name, ""))
    }
    unknown = representation - {"keyValues", "simplified", "normalized"}
    if unknown:
        raise _BadRequestError(
            f"unsupported options or format {', '.join(sorted(unknown))}: this server gives "
            "normalized or keyValues (simplified)"
        )
    return _EntityQuery(
        types=tuple(ENTITY_TYPES[name] for name in dict.fromkeys(type_names)),
        ids=None if ids is None else {name: tuple(keys) for name, keys in ids.items()},
        limit=limit,
        offset=offset,
        count=count == "true",
        simplified=bool(representation & {"keyValues", "simplified"}),
    )


def _where(
    entity_type: EntityType, ids: tuple[str, ...] | None
) -> tuple[sql.Composable, dict[str, Any]]:
    conditions: list[sql.Composable] = [
        sql.SQL("{} >= now() - %(within)s").format(sql.Identifier(entity_type.time_column))
    ]
    params: dict[str, Any] = {"within": CURRENT_WITHIN}
    if ids is not None:
        key = sql.SQL("concat_ws(':', {})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in entity_type.key_columns)
        )
        conditions.append(sql.SQL("{} = ANY(%(ids)s)").format(key))
        params["ids"] = list(ids)
    return sql.SQL(" AND ").join(conditions), params


async def _count(state: Publication, entity_type: EntityType, ids: tuple[str, ...] | None) -> int:
    where, params = _where(entity_type, ids)
    query = sql.SQL(
        "SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {view} WHERE {where}) k"
    ).format(
        keys=sql.SQL(", ").join(sql.Identifier(c) for c in entity_type.key_columns),
        view=sql.Identifier("opendata", entity_type.view),
        where=where,
    )
    async with state.pool.connection() as conn:
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def _rows(
    state: Publication,
    entity_type: EntityType,
    ids: tuple[str, ...] | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """The newest row of each key, in key order."""
    where, params = _where(entity_type, ids)
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in entity_type.key_columns)
    query = sql.SQL(
        "SELECT DISTINCT ON ({keys}) * FROM {view} WHERE {where} "
        "ORDER BY {keys}, {time} DESC LIMIT %(limit)s OFFSET %(offset)s"
    ).format(
        keys=keys,
        view=sql.Identifier("opendata", entity_type.view),
        where=where,
        time=sql.Identifier(entity_type.time_column),
    )
    async with state.pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(query, {**params, "limit": limit, "offset": offset})
        rows: list[dict[str, Any]] = await cursor.fetchall()
    return rows


@router.get(
    "/ngsi-ld/v1/entities",
    summary="NGSI-LD Query Entities: the current observations as FIWARE Smart Data Models",
)
async def entities(
    request: Request, state: Annotated[Publication, Depends(publication)]
) -> Response:
    published = _published(state.catalog)
    try:
        query = _entity_query(request.query_params, published)
    except _BadRequestError as exc:
        return _problem(400, "BadRequestData", "Bad request data", str(exc))
    media_type = negotiate(request.headers.get("accept"), [_JSON, _JSON_LD])
    if media_type is None:
        return _not_acceptable()
    contexts = {t.context for t in query.types}
    if media_type == _JSON and len(contexts) > 1:
        return _problem(
            400,
            "BadRequestData",
            "Bad request data",
            "these entity types use different @contexts, which one Link header cannot carry: "
            f"ask for them with Accept: {_JSON_LD} (each entity then holds its @context)",
        )

    found: list[tuple[EntityType, dict[str, Any]]] = []
    total = 0
    skip, room = query.offset, query.limit
    for entity_type in query.types:
        ids = None if query.ids is None else query.ids.get(entity_type.name, ())
        if ids == ():
            continue
        several = len(query.types) > 1
        type_total = await _count(state, entity_type, ids) if query.count or several else 0
        total += type_total
        if room > 0 and (not several or skip < type_total):
            rows = await _rows(state, entity_type, ids, room, skip)
            found.extend((entity_type, row) for row in rows)
            room -= len(rows)
        skip = max(0, skip - type_total) if several else 0

    body = [
        _render(state, published, entity_type, row, query.simplified, media_type)
        for entity_type, row in found
    ]
    headers: dict[str, str] = {}
    if query.count:
        headers["NGSILD-Results-Count"] = str(total)
    if media_type == _JSON:
        (context,) = contexts
        headers["Link"] = _link(context)
    return Response(orjson.dumps(body), media_type=media_type, headers=headers)


@router.get(
    "/ngsi-ld/v1/entities/{entity_id}",
    summary="NGSI-LD Retrieve Entity: one current observation by its id",
)
async def entity(
    entity_id: str, request: Request, state: Annotated[Publication, Depends(publication)]
) -> Response:
    published = _published(state.catalog)
    # The path names the entity: the query's own selection and paging do not apply.
    params = {
        name: value
        for name, value in request.query_params.items()
        if name not in ("type", "id", "limit", "offset", "count")
    }
    parsed = id_key(entity_id)
    if parsed is None:
        return _problem(
            400,
            "BadRequestData",
            "Bad request data",
            f"{entity_id!r} is not an entity id (urn:ngsi-ld:<Type>:<id>)",
        )
    try:
        query = _entity_query({**params, "id": entity_id, "limit": "1"}, published)
    except _BadRequestError as exc:
        if parsed[0] not in published:
            return _problem(404, "ResourceNotFound", "Not found", f"no entity {entity_id}")
        return _problem(400, "BadRequestData", "Bad request data", str(exc))
    media_type = negotiate(request.headers.get("accept"), [_JSON, _JSON_LD])
    if media_type is None:
        return _not_acceptable()
    (entity_type,) = query.types
    assert query.ids is not None
    rows = await _rows(state, entity_type, query.ids[entity_type.name], 1, 0)
    if not rows:
        return _problem(404, "ResourceNotFound", "Not found", f"no entity {entity_id}")
    body = _render(state, published, entity_type, rows[0], query.simplified, media_type)
    headers = {"Link": _link(entity_type.context)} if media_type == _JSON else {}
    return Response(orjson.dumps(body), media_type=media_type, headers=headers)


def _render(
    state: Publication,
    published: Mapping[str, str],
    entity_type: EntityType,
    row: Mapping[str, Any],
    simplified: bool,
    media_type: str,
) -> dict[str, Any]:
    base = state.public_url.rstrip("/")
    source = EntitySource(
        data_provider=state.settings.publisher,
        source=f"{base}/api/explore/v2.1/catalog/datasets/{published[entity_type.name]}",
    )
    entity = entity_type.build(row, source)
    if simplified:
        entity = key_values(entity)
    if media_type == _JSON_LD:
        entity["@context"] = [entity_type.context, CORE_CONTEXT]
    return entity


def _link(context: str) -> str:
    """The ``Link`` header carrying the @context of an ``application/json`` answer."""
    return f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="{_JSON_LD}"'


def _not_acceptable() -> Response:
    return _problem(
        406, "InvalidRequest", "Not acceptable", f"this resource is served as {_JSON} or {_JSON_LD}"
    )
