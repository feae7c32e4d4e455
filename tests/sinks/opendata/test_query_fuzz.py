"""Hostile and random parameters: the builder either refuses them with the API's errors or
produces a query that PostgreSQL runs without error, as a role that may read the dataset's view
only, and whose plan reads no relation but the view's own table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from citysense.settings import Settings
from sinks.opendata._odsql import ODSQLError
from sinks.opendata._query import (
    InvalidParameterError,
    RecordsRequest,
    build_export,
    build_records,
    build_v1_search,
)
from tests.sinks.opendata._query_db import DATASET, ScratchDatabase, scratch_database

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELDS = [f.name for f in DATASET.fields]
INJECTIONS = [
    "'; DROP TABLE sensors; --",
    "') or 1=1 --",
    '" or "1"="1',
    "1; SELECT pg_sleep(10)",
    "pg_sleep(10)",
    "x' UNION SELECT api_key FROM sensors --",
    "(SELECT api_key FROM sensors)",
    "pg_catalog.pg_user",
    "public.sensors",
    "current_setting('is_superuser')",
    "$1",
    "%s",
    "%(x)s",
    "{}",
    "\\",
    "\x00",
    "é€😀 ‮",
    "\U0001d518\U0001d52b\U0001d526",  # mathematical letters
    "x" * 20_000,
    "not " * 3000 + "ok",
    "(" * 300 + "ok" + ")" * 300,
]
FUNCTIONS = [
    *("count", "avg", "sum", "min", "max", "median", "percentile", "now", "date_format"),
    *("year", "hour", "range", "within_distance", "distance", "in_bbox", "search"),
    *("startswith", "length", "lower", "upper", "pg_sleep", "version", "current_user"),
]
VOCABULARY = [
    *FIELDS,
    *(f"`{name}`" for name in FIELDS),
    "_owner_email",
    "`_owner_email`",
    "sensors",
    "readings",
    "api_key",
    *"and or not in is null true false like as asc desc".split(),  # noqa: SIM905
    *"= != <> < <= > >= : + - * / ( ) , ; -- ' \" `".split(),  # noqa: SIM905
    *(f"{name}(" for name in FUNCTIONS),
    "count(*)",
    "1",
    "0",
    "-5",
    "55.25",
    "1e999",
    "99999999999999999999999",
    "'s1'",
    '"nation"',
    "'bastille_50%'",
    "date'2026-03-29'",
    "date'2026-03-29T01:30:00Z'",
    "date'bogus'",
    "geom'POINT(2.3958 48.8483)'",
    "geom'POINT(500 500)'",
    "500m",
    "1km",
    "1 day",
    "6h",
    "1 M",
    "'yyyy-MM-dd HH'",
    "'EEEE'",
    "days=-1",
    *INJECTIONS[:12],
]

clause = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(INJECTIONS),
    st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=12).map(" ".join),
)
refine_spec = st.one_of(
    st.text(max_size=30),
    st.sampled_from(INJECTIONS),
    st.builds(
        "{}:{}".format,
        st.sampled_from([*FIELDS, "_owner_email", "nope", ""]),
        st.one_of(
            st.text(max_size=15),
            st.sampled_from(["2026", '"2026/03"', "2026-03-29", "s1", "55.25", "true", "x'--"]),
            st.sampled_from(INJECTIONS),
        ),
    ),
)
timezone = st.one_of(
    st.sampled_from(
        ["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns", "posixrules", "Mars/Base"]
    ),
    st.sampled_from(INJECTIONS),
    st.text(max_size=20),
)
hostile_request = st.builds(
    RecordsRequest,
    select=clause,
    where=clause,
    group_by=clause,
    order_by=clause,
    limit=st.one_of(st.sampled_from([-1, 0, 1, 10, 100, 20_000]), st.integers(-3, 30_000)),
    offset=st.one_of(st.just(0), st.integers(-2, 20_001)),
    refine=st.lists(refine_spec, max_size=2).map(tuple),
    exclude=st.lists(refine_spec, max_size=2).map(tuple),
    timezone=timezone,
    lang=st.sampled_from(["fr", "en", "de", ""]),
)

# --- well-formed clauses carrying hostile values ------------------------------------------
# Most random text is refused by the grammar; these clauses are valid ODSQL whose literals are
# random or hostile, so the database really runs what the compiler made of them.

NUMBER_FIELDS = ["laeq_db", "sample_count"]
TEXT_FIELDS = ["sensor_id", "site_name"]
hostile_text = st.one_of(st.text(max_size=20), st.sampled_from(INJECTIONS[:-3]))


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


number = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.decimals(-(10**9), 10**9, allow_nan=False, allow_infinity=False, places=3).map(
        lambda d: format(d, "f")
    ),
)
comparison = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", ":"])
moment = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - naive: the request's timezone applies
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
).map(lambda d: d.isoformat())
atom = st.one_of(
    st.builds("{} {} {}".format, st.sampled_from(NUMBER_FIELDS), comparison, number),
    st.builds(
        "{} {} {}".format, st.sampled_from(TEXT_FIELDS), comparison, hostile_text.map(quoted)
    ),
    st.builds("{} like {}".format, st.sampled_from(TEXT_FIELDS), hostile_text.map(quoted)),
    st.builds("{} is {}null".format, st.sampled_from(FIELDS), st.sampled_from(["", "not "])),
    hostile_text.map(quoted),
    st.builds("search(site_name, {})".format, hostile_text.map(quoted)),
    st.builds("startswith(sensor_id, {})".format, hostile_text.map(quoted)),
    st.builds("start_time {} date'{}'".format, comparison, moment),
    st.builds("day {} {}".format, comparison, moment.map(lambda m: quoted(m[:10]))),
    st.builds("start_time > now(days={})".format, st.integers(-400_000, 400_000)),
    st.builds(
        "within_distance(geo_point_2d, geom'POINT({} {})', {}{})".format,
        st.floats(-180, 180).map(lambda f: format(f, ".6f")),
        st.floats(-90, 90).map(lambda f: format(f, ".6f")),
        st.integers(0, 10**7),
        st.sampled_from(["m", "km", "mi", "yd", "ft", "cm", "mm"]),
    ),
    st.builds(
        "{} * {} + {} / {} > {}".format,
        st.sampled_from(NUMBER_FIELDS),
        number,
        st.sampled_from(NUMBER_FIELDS),
        number,
        number,
    ),
    st.builds("sample_count in ({}, {})".format, number, number),
    st.sampled_from(["ok", "not ok", "ok is true", "length(site_name) > 8"]),
)
condition = st.recursive(
    atom,
    lambda inner: st.one_of(
        st.builds("({}) and ({})".format, inner, inner),
        st.builds("{} or {}".format, inner, inner),
        inner.map("not ({})".format),
    ),
    max_leaves=8,
)
row_select = st.lists(
    st.one_of(
        st.sampled_from([*FIELDS, "*", "laeq_db * 2", "year(start_time)", "upper(site_name)"]),
        st.builds(
            "date_format(start_time, {})".format,
            st.sampled_from(["'yyyy-MM-dd HH:mm'", "\"EEEE 'week' w\"", "'D'", "\"'q''t'\""]),
        ),
        hostile_text.map(quoted),
        number,
    ),
    min_size=1,
    max_size=4,
    unique=True,
).map(
    lambda items: ", ".join(
        item if item in FIELDS or item == "*" else f"{item} as a{i}" for i, item in enumerate(items)
    )
)
valid_refine = st.one_of(
    st.builds("{}:{}".format, st.sampled_from(TEXT_FIELDS), hostile_text),
    st.builds("{}:{}".format, st.sampled_from(NUMBER_FIELDS), number),
    st.builds("ok:{}".format, st.sampled_from(["true", "false", "TRUE"])),
    st.builds(
        "{}:{}".format,
        st.sampled_from(["start_time", "day"]),
        moment.map(lambda m: m[: len("2026-03-29")].replace("-", "/")),
    ),
    st.builds("start_time:{}".format, moment.map(lambda m: m[:7])),
)
GROUPS = [
    "sensor_id",
    "site_name",
    "ok",
    "day",
    "date_format(start_time, 'yyyy-MM')",
    "range(laeq_db, 5)",
    "range(start_time, 1 day)",
    "range(start_time, 6h)",
    "range(day, 1 w)",
    "year(start_time)",
]
AGGREGATES = [
    "count(*) as n",
    "avg(laeq_db) as mean",
    "max(start_time) as last",
    "sum(sample_count) as s",
    "median(laeq_db) as med",
    "count(geo_point_2d) as located",
]


@st.composite
def well_formed_request(draw: st.DrawFn) -> RecordsRequest:
    grouped = draw(st.booleans())
    if grouped:
        groups = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True))
        aggregates = draw(st.lists(st.sampled_from(AGGREGATES), max_size=2, unique=True))
        keys_only: bool = draw(st.booleans())
        select = ", ".join(groups + aggregates) if aggregates or keys_only else None
        order_by = draw(
            st.sampled_from(
                [None, "n desc" if "count(*) as n" in aggregates else None, f"{groups[0]} desc"]
            )
        )
        group_by: str | None = ", ".join(groups)
        limit = draw(st.integers(-1, 200))
    else:
        select = draw(st.one_of(st.none(), row_select))
        group_by = None
        order_by = draw(
            st.sampled_from(
                [
                    None,
                    "laeq_db desc, sensor_id",
                    "start_time",
                    "distance(geo_point_2d, geom'POINT(2.39 48.85)')",
                ]
            )
        )
        limit = draw(st.integers(-1, 100))
    request = RecordsRequest(
        select=select,
        where=draw(st.one_of(st.none(), condition)),
        group_by=group_by,
        order_by=order_by,
        limit=limit,
        offset=draw(st.integers(0, 50)),
        refine=tuple(draw(st.lists(valid_refine, max_size=2))),
        exclude=tuple(draw(st.lists(valid_refine, max_size=2))),
        timezone=draw(
            st.sampled_from(["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns"])
        ),
    )
    return request


records_request = st.one_of(hostile_request, well_formed_request())


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the view-only role; any statement over 5 s fails (a sleeping
    injection would show up as an error, not as a slow test)."""
    scratch: ScratchDatabase
    with scratch_database(settings) as scratch, psycopg.connect(scratch.api_url) as conn:
        conn.execute("SET statement_timeout = '5s'")
        conn.commit()
        yield conn


def relations(plan: Any) -> set[str]:
    found: set[str] = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "Relation Name" in node:
                found.add(node["Relation Name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def check_runs(
    conn: psycopg.Connection[Any],
    timezone_name: str,
    statements: list[tuple[sql.Composed, tuple[Any, ...]]],
) -> None:
    with conn.transaction():
        conn.execute("SELECT set_config('TimeZone', %s, true)", [timezone_name])
        for query, params in statements:
            explained = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()
            assert explained is not None
            assert relations(explained[0]) <= {"readings"}
            conn.execute(query, params).fetchall()


@FUZZ
@given(request=records_request)
def test_records_requests_are_refused_or_run_cleanly(
    api: psycopg.Connection[Any], request: RecordsRequest
) -> None:
    try:
        compiled = build_records(DATASET, request)
    except (ODSQLError, InvalidParameterError):
        return
    check_runs(
        api,
        compiled.timezone,
        [(compiled.query, compiled.params), (compiled.count_query, compiled.count_params)],
    )


@FUZZ
@given(request=records_request)
def test_export_requests_are_refused_or_run_cleanly(
    api: psycopg.Connection[Any], request: RecordsRequest
) -> None:
    try:
        compiled = build_export(DATASET, request)
    except (ODSQLError, InvalidParameterError):
        return
    check_runs(api, compiled.timezone, [(compiled.query, compiled.params)])


field_or_noise = st.one_of(
    st.sampled_from([*FIELDS, "_owner_email", "nope"]), st.sampled_from(INJECTIONS)
)


@FUZZ
@given(
    q=clause,
    rows=st.integers(-2, 1002),
    start=st.integers(-1, 10_001),
    sort=st.one_of(
        st.none(),
        st.lists(
            st.builds("{}{}".format, st.sampled_from(["", "-"]), field_or_noise), max_size=3
        ).map(",".join),
    ),
    refine=st.dictionaries(field_or_noise, st.lists(refine_spec, max_size=2), max_size=2),
    exclude=st.dictionaries(field_or_noise, st.lists(refine_spec, max_size=2), max_size=2),
    facets=st.lists(field_or_noise, max_size=3),
    timezone_name=timezone,
)
def test_v1_searches_are_refused_or_run_cleanly(
    api: psycopg.Connection[Any],
    q: str | None,
    rows: int,
    start: int,
    sort: str | None,
    refine: dict[str, list[str]],
    exclude: dict[str, list[str]],
    facets: list[str],
    timezone_name: str,
) -> None:
    try:
        compiled = build_v1_search(
            DATASET,
            q=q,
            rows=rows,
            start=start,
            sort=sort,
            refine=refine,
            exclude=exclude,
            facets=facets,
            timezone=timezone_name,
        )
    except (ODSQLError, InvalidParameterError):
        return
    check_runs(
        api,
        compiled.timezone,
        [
            (compiled.query, compiled.params),
            (compiled.count_query, compiled.count_params),
            *((f.query, f.params) for f in compiled.facets),
        ],
    )


def test_some_fuzzed_shapes_do_compile() -> None:
    """The vocabulary reaches the database: these hand-picked token soups are valid queries
    (so the properties above do not pass by refusing everything)."""
    for where in (
        "sensor_id = 's1' or not ok",
        "laeq_db > 55.25 and start_time > date'2026-03-29'",
        "within_distance(geo_point_2d, geom'POINT(2.3958 48.8483)', 500m)",
        "site_name like 'bastille_50%' and \"nation\"",
    ):
        build_records(DATASET, RecordsRequest(where=where))
    build_records(
        DATASET,
        RecordsRequest(select="count(*)", group_by="range(start_time, 1 day)", limit=-1),
    )
