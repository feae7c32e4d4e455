"""The OpenDataSoft Explore API v2.1 routes reusers call: catalogue, dataset, records, exports.

Paths, parameters and answers follow the portal (``/api/explore/v2.1/catalog/...``; records
answer ``{"total_count": N, "results": [...]}``; exports stream with no row limit), so a script
written against a city's OpenDataSoft portal works against citysense by changing the host.
Every query is compiled from ODSQL into parameterised SQL over the dataset's view
(:mod:`sinks.opendata._query`); what the grammar refuses is a 400 naming the clause and position.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
import psycopg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from psycopg import sql

from sinks.opendata._catalog import Dataset, UnknownDatasetError
from sinks.opendata._exports import EXPORT_FORMATS, ExportOptions, stream_export
from sinks.opendata._format import json_rows
from sinks.opendata._query import CompiledRecords, RecordsRequest, build_export, build_records
from sinks.opendata._state import ApiError, Publication, publication

__all__ = ["dataset_document", "router"]

router = APIRouter(prefix="/api/explore/v2.1", tags=["Explore API v2.1"])

#: Seconds a dataset's row count is reused in catalogue answers (counting a view is a scan).
_COUNT_TTL_S = 60.0
_counts: dict[tuple[int, str], tuple[float, int | None]] = {}

_Text = Annotated[str | None, Query()]
_Many = Annotated[list[str] | None, Query()]


def dataset_or_404(state: Publication, dataset_id: str) -> Dataset:
    try:
        return state.catalog.get(dataset_id)
    except UnknownDatasetError:
        raise ApiError(404, "UnknownDatasetError", f"Unknown dataset: {dataset_id}") from None


def _lang(lang: str | None) -> str:
    if lang is None:
        return "fr"
    if lang not in ("fr", "en"):
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Invalid value for lang API parameter: {lang!r} was found but one of fr, en "
            "is expected.",
        )
    return lang


async def _records_count(state: Publication, dataset: Dataset) -> int | None:
    """The dataset's row count, cached; None when counting ran over the statement timeout."""
    now = time.monotonic()
    key = (id(state.pool), dataset.id)
    cached = _counts.get(key)
    if cached is not None and now - cached[0] < _COUNT_TTL_S:
        return cached[1]
    count: int | None
    try:
        async with state.pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("opendata", dataset.view))
            )
            row = await cursor.fetchone()
            count = None if row is None else int(row[0])
    except psycopg.errors.QueryCanceled:
        count = None
    _counts[key] = (now, count)
    return count


def dataset_document(
    state: Publication, dataset: Dataset, lang: str, records_count: int | None
) -> dict[str, Any]:
    """A dataset as the portal describes it (``dataset_id``, ``metas.default``, ``fields``)."""
    licence_id = dataset.licence or state.settings.licence
    from sinks.opendata._catalog import LICENCES

    licence = LICENCES[licence_id]
    features = ["analyze"]
    if dataset.timestamp_field is not None:
        features.append("timeserie")
    if dataset.geo_field is not None:
        features.append("geo")
    return {
        "dataset_id": dataset.id,
        "dataset_uid": f"da_{dataset.view}",
        "has_records": bool(records_count),
        "data_visible": True,
        "features": features,
        "attachments": [],
        "metas": {
            "default": {
                "title": dataset.title.get(lang),
                "description": dataset.description.get(lang),
                "keyword": list(dataset.keywords),
                "theme": [dataset.theme],
                "license": licence.title,
                "license_url": licence.url,
                "language": lang,
                "publisher": state.settings.publisher,
                "contact_email": state.settings.contact_email,
                "update_frequency": dataset.frequency,
                "records_count": records_count,
                "timezone": "Europe/Paris",
            }
        },
        "fields": [
            {
                "name": field.name,
                "label": field.label.get(lang),
                "type": field.type,
                "description": None if field.description is None else field.description.get(lang),
                "annotations": {} if field.unit is None else {"unit": field.unit},
            }
            for field in dataset.fields
        ],
    }


@router.get("/catalog/datasets", summary="List the published datasets")
async def list_datasets(
    state: Annotated[Publication, Depends(publication)],
    limit: int = 10,
    offset: int = 0,
    lang: _Text = None,
) -> dict[str, Any]:
    language = _lang(lang)
    _check_page(limit, offset)
    datasets = list(state.catalog)
    page = datasets[offset:] if limit == -1 else datasets[offset : offset + limit]
    return {
        "total_count": len(datasets),
        "results": [
            dataset_document(state, d, language, await _records_count(state, d)) for d in page
        ],
    }


@router.get("/catalog/datasets/{dataset_id}", summary="One dataset's metadata and fields")
async def get_dataset(
    dataset_id: str,
    state: Annotated[Publication, Depends(publication)],
    lang: _Text = None,
) -> dict[str, Any]:
    dataset = dataset_or_404(state, dataset_id)
    return dataset_document(state, dataset, _lang(lang), await _records_count(state, dataset))


def _check_page(limit: int, offset: int, maximum: int = 100) -> None:
    if not -1 <= limit <= maximum:
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Invalid value for limit API parameter: {limit} was found but -1 <= limit <= "
            f"{maximum} is expected.",
        )
    if offset < 0:
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Invalid value for offset API parameter: {offset} was found but offset >= 0 "
            "is expected.",
        )


def _timezone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError, OSError):
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Invalid value for timezone API parameter: unknown time zone {name!r}.",
        ) from None


#: An unfiltered dataset's row count, reused this long: counting a year of hourly rows is a
#: scan of every row (tens of milliseconds), the page itself an index read.
_TOTAL_TTL_S = 5.0
_totals: dict[tuple[int, str], tuple[float, int]] = {}


def _cached_total(key: tuple[int, str]) -> int | None:
    cached = _totals.get(key)
    if cached is None or time.monotonic() - cached[0] > _TOTAL_TTL_S:
        return None
    return cached[1]


def _total_from_page(limit: int, offset: int, returned: int) -> int | None:
    """``total_count`` when the page itself tells it: a page shorter than the limit is the
    last one, so the total is the offset plus its rows (unless it is empty past the end)."""
    if limit < 0 or returned >= limit:
        return None
    if returned == 0 and offset > 0:
        return None
    return offset + returned


#: Compiled records queries by (dataset, request), most recently used last.
_COMPILED_MAX = 512
#: The value keeps its dataset alive, so the dataset's ``id`` in the key is not reused meanwhile.
_compiled: OrderedDict[tuple[int, RecordsRequest], tuple[Dataset, CompiledRecords]] = OrderedDict()


def _compiled_records(dataset: Dataset, request: RecordsRequest) -> CompiledRecords:
    """:func:`build_records`, reused for a request seen before: parsing and compiling ODSQL was
    about a quarter of the API process's time per request (cProfile, ``python -m benchmarks
    publish`` queries). A compiled query depends on nothing but the dataset and the request
    (``now()`` stays SQL's ``now()``); errors are not kept, so a bad query is parsed again."""
    key = (id(dataset), request)
    found = _compiled.get(key)
    if found is not None:
        _compiled.move_to_end(key)
        return found[1]
    compiled = build_records(dataset, request)
    _compiled[key] = (dataset, compiled)
    if len(_compiled) > _COMPILED_MAX:
        _compiled.popitem(last=False)
    return compiled


@router.get(
    "/catalog/datasets/{dataset_id}/records",
    summary="Query a dataset's records (ODSQL select, where, group_by, order_by)",
)
async def records(
    dataset_id: str,
    state: Annotated[Publication, Depends(publication)],
    select: _Text = None,
    where: _Text = None,
    group_by: _Text = None,
    order_by: _Text = None,
    limit: int = 10,
    offset: int = 0,
    refine: _Many = None,
    exclude: _Many = None,
    lang: _Text = None,
    timezone: _Text = None,
) -> Response:
    dataset = dataset_or_404(state, dataset_id)
    _lang(lang)
    tz = _timezone(timezone)
    request = RecordsRequest(
        select=select,
        where=where,
        group_by=group_by,
        order_by=order_by,
        limit=limit,
        offset=offset,
        refine=tuple(refine or ()),
        exclude=tuple(exclude or ()),
        timezone=str(tz),
        lang=lang or "fr",
    )
    compiled = _compiled_records(dataset, request)
    columns = [(c.name, c.type) for c in compiled.columns]
    unfiltered = not (where or group_by or refine or exclude)
    async with state.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT set_config('TimeZone', %s, true)", [str(tz)])
        cursor = await conn.execute(compiled.query, compiled.params)
        rows = await cursor.fetchall()
        total = _total_from_page(compiled.limit, offset, len(rows))
        if total is None and unfiltered:
            total = _cached_total((id(state.pool), dataset.id))
        if total is None:
            cursor = await conn.execute(compiled.count_query, compiled.count_params)
            counted = await cursor.fetchone()
            total = 0 if counted is None else int(counted[0])
            if unfiltered:
                _totals[(id(state.pool), dataset.id)] = (time.monotonic(), total)
    body = {
        "total_count": total,
        "results": json_rows(rows, columns, tz),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/catalog/datasets/{dataset_id}/exports/{export_format}",
    summary="Export a dataset (csv, json, jsonl, geojson, parquet), streamed, no row limit",
)
async def export(
    dataset_id: str,
    export_format: str,
    state: Annotated[Publication, Depends(publication)],
    select: _Text = None,
    where: _Text = None,
    group_by: _Text = None,
    order_by: _Text = None,
    limit: int = -1,
    refine: _Many = None,
    exclude: _Many = None,
    lang: _Text = None,
    timezone: _Text = None,
    delimiter: str = ";",
    with_bom: bool = True,
) -> StreamingResponse:
    dataset = dataset_or_404(state, dataset_id)
    if export_format not in EXPORT_FORMATS:
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Unknown export format {export_format!r}: one of "
            f"{', '.join(sorted(EXPORT_FORMATS))} is expected.",
        )
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            "Invalid value for delimiter API parameter: one character other than a quote or a "
            "line break is expected.",
        )
    if limit < -1:
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Invalid value for limit API parameter: {limit} was found but limit >= -1 is "
            "expected.",
        )
    _lang(lang)
    tz = _timezone(timezone)
    request = RecordsRequest(
        select=select,
        where=where,
        group_by=group_by,
        order_by=order_by,
        limit=limit,
        offset=0,
        refine=tuple(refine or ()),
        exclude=tuple(exclude or ()),
        timezone=str(tz),
        lang=lang or "fr",
    )
    compiled = build_export(dataset, request)
    fmt = EXPORT_FORMATS[export_format]
    options = ExportOptions(delimiter=delimiter, with_bom=with_bom, tz=tz)
    chunks: AsyncIterator[bytes] = stream_export(state, dataset, compiled, export_format, options)
    return StreamingResponse(
        chunks,
        media_type=fmt.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{dataset.id}.{fmt.extension}"',
        },
    )
