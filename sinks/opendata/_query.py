"""The publication API's queries: request parameters → SQL over one dataset's view.

Explore API v2.1 ``records`` and ``exports`` (select, where, group_by, order_by, limit, offset,
refine, exclude, timezone, lang) and the v1 ``records/1.0/search`` API (q, rows, start, sort,
refine.<field>, exclude.<field>, facet). Everything reads ``opendata.<view>`` only, names only
the dataset's fields, and passes every value as a parameter (:mod:`sinks.opendata._odsql_compile`).

The app runs a compiled query in a transaction after ``SELECT set_config('TimeZone', tz, true)``
with ``tz`` the compiled ``timezone``; the SQL itself already reads dates in that timezone.

Limits are the portal's (Explore API v2.1 reference, ``limit`` and ``offset``): records default
to 10, ``-1 <= limit <= 100`` and ``offset + limit <= 10000`` without group_by; with group_by (or
an aggregation) up to 20,000 groups. Exports have no limit. v1 search (OpenDataSoft Search API
v1, "Record Search API"): ``rows`` 10 by default, at most 1000, ``sort=field`` descending and
``sort=-field`` ascending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from psycopg import sql

from sinks.opendata._catalog import GEO_TYPES, Dataset, FieldType
from sinks.opendata._odsql import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Expr,
    FieldRef,
    GroupItem,
    InList,
    IsBool,
    IsNull,
    Like,
    Negate,
    Not,
    ODSQLError,
    OrderItem,
    SelectItem,
    check_text,
    parse_group_by,
    parse_order_by,
    parse_select,
    parse_where,
)
from sinks.opendata._odsql_compile import (
    Compiler,
    Fragment,
    Typed,
    fulltext,
    join,
    output_type,
    parse_date_text,
    safe_double,
    sql_fragment,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_GROUP_LIMIT",
    "MAX_GROUP_WINDOW",
    "MAX_LIMIT",
    "MAX_WINDOW",
    "V1_MAX_ROWS",
    "CompiledExport",
    "CompiledRecords",
    "CompiledV1Search",
    "FacetQuery",
    "InvalidParameterError",
    "OutputColumn",
    "RecordsRequest",
    "build_export",
    "build_records",
    "build_v1_search",
    "refine_condition",
    "validate_timezone",
]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_WINDOW = 10_000
MAX_GROUP_LIMIT = 20_000
MAX_GROUP_WINDOW = 20_000
V1_MAX_ROWS = 1000
#: Facet values returned per field by the v1 search API.
V1_FACET_VALUES = 1000
#: More refine/exclude/facet parameters than this is no query a reuser writes.
MAX_FILTERS = 100

_GROUP_KEY = "_odsql_group_{}"


class InvalidParameterError(ValueError):
    """A request parameter out of its range; the API answers 400 ``InvalidRESTParameterError``
    with the portal's wording ("Invalid value for limit API parameter: …")."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordsRequest:
    """The Explore API v2.1 records/exports parameters, as received (text not yet parsed)."""

    select: str | None = None
    where: str | None = None
    group_by: str | None = None
    order_by: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    refine: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    timezone: str = "UTC"
    lang: str = "fr"


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One column of the answer: its name in the results and its portal type."""

    name: str
    type: FieldType


@dataclass(frozen=True, slots=True)
class CompiledRecords:
    query: sql.Composed
    params: tuple[Any, ...]
    #: Rows matching (or groups, with group_by): the answer's ``total_count``.
    count_query: sql.Composed
    count_params: tuple[Any, ...]
    columns: tuple[OutputColumn, ...]
    timezone: str
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class CompiledExport:
    query: sql.Composed
    params: tuple[Any, ...]
    columns: tuple[OutputColumn, ...]
    timezone: str


@dataclass(frozen=True, slots=True)
class FacetQuery:
    """One v1 facet: rows of (value, count), most frequent first."""

    field: str
    query: sql.Composed
    params: tuple[Any, ...]
    value_type: FieldType


@dataclass(frozen=True, slots=True)
class CompiledV1Search:
    query: sql.Composed
    params: tuple[Any, ...]
    count_query: sql.Composed
    count_params: tuple[Any, ...]
    columns: tuple[OutputColumn, ...]
    facets: tuple[FacetQuery, ...]
    timezone: str
    rows: int
    start: int


# --- parameters ----------------------------------------------------------------------------


@cache
def _known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone both Python and PostgreSQL know, else the portal's
    parameter error."""
    if name not in _known_timezones():
        raise InvalidParameterError(
            "timezone",
            f"Invalid value for timezone API parameter: {_shown(name)} was found but an IANA "
            "time zone name (Europe/Paris, UTC) is expected.",
        )
    return name


def _check_lang(lang: str) -> None:
    if lang not in ("fr", "en"):
        raise InvalidParameterError(
            "lang",
            f"Invalid value for lang API parameter: {_shown(lang)} was found but one of fr, en "
            "is expected.",
        )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _limits(limit: int, offset: int, grouped: bool) -> tuple[int, int]:
    """The effective limit (-1 is the largest allowed) after the portal's checks."""
    top, window = (MAX_GROUP_LIMIT, MAX_GROUP_WINDOW) if grouped else (MAX_LIMIT, MAX_WINDOW)
    if not -1 <= limit <= top:
        raise InvalidParameterError(
            "limit",
            f"Invalid value for limit API parameter: {limit} was found but -1 <= limit <= {top} "
            "is expected.",
        )
    if offset < 0:
        raise InvalidParameterError(
            "offset",
            f"Invalid value for offset API parameter: {offset} was found but offset >= 0 is "
            "expected.",
        )
    effective = top if limit == -1 else limit
    if offset + effective > window:
        raise InvalidParameterError(
            "offset",
            f"Invalid value for sum of offset + limit API parameter: {offset + effective} was "
            f"found but <= {window} is expected.",
        )
    return effective, offset


# --- refine / exclude ----------------------------------------------------------------------


def refine_condition(
    dataset: Dataset, spec: str, timezone: str, clause: str = "refine"
) -> Fragment:
    """``field:value`` as a condition (Explore API v2.1 ``refine``; ``exclude`` negates it).

    Text, numbers and booleans match exactly. A date or datetime matches by prefix in the
    request's timezone, like the portal's date facets: ``2026``, ``2026/01`` (or ``2026-01``),
    ``2026/01/15``; a full timestamp matches that instant. The value may be in double quotes.
    """
    check_text(clause, spec)
    name, colon, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name:
        raise ODSQLError(clause, None, f"{_shown(spec)} is not field:value")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return _match(dataset, name, value, timezone, clause)


def _match(dataset: Dataset, name: str, value: str, timezone: str, clause: str) -> Fragment:
    try:
        field_type = dataset.field(name).type
    except KeyError:
        raise ODSQLError(clause, None, f"Unknown field: {name}") from None
    column = Fragment(sql.Identifier(name))
    if field_type == "text":
        return sql_fragment("({} = {})", column, _param(value, "text"))
    if field_type in ("int", "double"):
        try:
            number = Decimal(value)
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite() or (number and abs(number.adjusted()) > 300):
            raise ODSQLError(clause, None, f"{name} is a number; {_shown(value)} is not one")
        return sql_fragment("({} = {})", column, _param(number, "numeric"))
    if field_type == "boolean":
        if value.lower() not in ("true", "false"):
            raise ODSQLError(clause, None, f"{name} is true or false, not {_shown(value)}")
        return sql_fragment("({} = {})", column, _param(value.lower() == "true", "boolean"))
    if field_type in ("date", "datetime"):
        return _date_match(column, field_type, name, value, timezone, clause)
    raise ODSQLError(clause, None, f"cannot {clause} on the {field_type} field {name}")


def _date_match(
    column: Fragment, field_type: str, name: str, value: str, timezone: str, clause: str
) -> Fragment:
    try:
        moment, day = parse_date_text(value, timezone)
    except ValueError as exc:
        raise ODSQLError(clause, None, f"{name}: {exc}") from None
    if day is None:  # a full timestamp: that instant
        if field_type == "date":
            return sql_fragment("({} = {})", column, _param(moment.date(), "date"))
        return sql_fragment("({} = {})", column, _param(moment, "timestamptz"))
    parts = len([p for p in value.replace("-", "/").split("/") if p.strip()])
    if parts == 1:
        end_day = date(day.year + 1, 1, 1) if day.year < 9999 else date.max
    elif parts == 2:
        end_day = (
            date(day.year + (day.month == 12), day.month % 12 + 1, 1)
            if (day.year, day.month) != (9999, 12)
            else date.max
        )
    else:
        end_day = date.fromordinal(min(day.toordinal() + 1, date.max.toordinal()))
    if field_type == "date":
        return sql_fragment(
            "({} >= {} AND {} < {})", column, _param(day, "date"), column, _param(end_day, "date")
        )
    zone = ZoneInfo(timezone)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
    return sql_fragment(
        "({} >= {} AND {} < {})",
        column,
        _param(moment, "timestamptz"),
        column,
        _param(end, "timestamptz"),
    )


def _param(value: Any, cast: str) -> Fragment:
    return Fragment(sql.SQL(f"(%s::{cast})"), (value,))


def _filters(
    dataset: Dataset,
    timezone: str,
    where: str | None,
    refine: Sequence[str],
    exclude: Sequence[str],
) -> list[Fragment]:
    if len(refine) + len(exclude) > MAX_FILTERS:
        raise InvalidParameterError(
            "refine",
            f"Invalid value for refine API parameter: at most {MAX_FILTERS} refine and "
            "exclude parameters are expected.",
        )
    conditions = []
    if where is not None and where.strip():
        conditions.append(Compiler(dataset, timezone, "where").condition(parse_where(where)))
    conditions.extend(refine_condition(dataset, spec, timezone, "refine") for spec in refine)
    conditions.extend(
        sql_fragment(
            "(NOT coalesce({}, FALSE))", refine_condition(dataset, spec, timezone, "exclude")
        )
        for spec in exclude
    )
    return conditions


def _where_sql(conditions: Sequence[Fragment]) -> Fragment:
    if not conditions:
        return Fragment(sql.SQL(""))
    return sql_fragment(" WHERE {}", join(" AND ", conditions))


def _view(dataset: Dataset) -> Fragment:
    return Fragment(sql.Identifier("opendata", dataset.view))


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """A records query without its LIMIT: select list, source and order, and its count."""

    body: Fragment
    count: Fragment
    columns: tuple[OutputColumn, ...]
    grouped: bool


def _walk(expr: Expr) -> Iterable[Expr]:
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Call):
            stack.extend(node.args)
        elif isinstance(node, Arith | BoolOp):
            stack.extend(node.operands)
        elif isinstance(node, Compare):
            stack.extend((node.left, node.right))
        elif isinstance(node, Negate | Not | IsNull | IsBool):
            stack.append(node.operand)
        elif isinstance(node, InList):
            stack.extend((node.operand, *node.items))
        elif isinstance(node, Like):
            stack.extend((node.operand, node.pattern))


def _has_aggregate(items: Iterable[SelectItem]) -> bool:
    aggregates = {"count", "avg", "sum", "min", "max", "median", "percentile"}
    return any(
        isinstance(node, Call) and node.name in aggregates
        for item in items
        if item.expr is not None
        for node in _walk(item.expr)
    )


def _output(typed: Typed) -> Fragment:
    return safe_double(typed.frag) if typed.type == "numeric" else typed.frag


def _columns_sql(outputs: Sequence[Typed]) -> Fragment:
    return join(
        ", ",
        (
            sql_fragment("{} AS {}", _output(t), Fragment(sql.Identifier(f"c{i}")))
            for i, t in enumerate(outputs)
        ),
    )


def _names(items: Sequence[tuple[str, int]], clause: str) -> None:
    seen: set[str] = set()
    for name, pos in items:
        if name in seen:
            raise ODSQLError(clause, pos, f"the column name {name!r} is used twice (use 'as')")
        seen.add(name)


def _order_sql(
    compiler: Compiler,
    items: Sequence[OrderItem],
    aliases: Mapping[str, Expr],
) -> Fragment:
    parts = []
    for item in items:
        expr = item.expr
        if isinstance(expr, FieldRef) and expr.name in aliases:
            expr = aliases[expr.name]
        typed = compiler.value(expr)
        if typed.type in GEO_TYPES:
            raise ODSQLError("order_by", item.pos, f"cannot order by a {typed.type} value")
        direction = "DESC" if item.descending else "ASC"
        parts.append(sql_fragment(f"{{}} {direction} NULLS LAST", _output(typed)))
    return sql_fragment(" ORDER BY {}", join(", ", parts))


def _default_order(dataset: Dataset) -> Fragment:
    """Newest first, then the key fields: a total order, so pages do not overlap.

    Plain ``DESC`` (nulls first, PostgreSQL's default) on the time: the views' times are never
    null, and that is the order of the ``(window_seconds, bucket DESC)`` indexes, so the newest
    page is read from the index instead of sorting the whole history."""
    parts = []
    if dataset.timestamp_field is not None:
        parts.append(sql_fragment("{} DESC", Fragment(sql.Identifier(dataset.timestamp_field))))
    parts.extend(
        sql_fragment("{} ASC NULLS LAST", Fragment(sql.Identifier(name)))
        for name in dataset.key_fields or tuple(f.name for f in dataset.fields[:1])
        if name != dataset.timestamp_field and dataset.field(name).type not in GEO_TYPES
    )
    if not parts:
        return Fragment(sql.SQL(""))
    return sql_fragment(" ORDER BY {}", join(", ", parts))


def _plan(dataset: Dataset, request: RecordsRequest) -> _Plan:
    timezone = validate_timezone(request.timezone)
    _check_lang(request.lang)
    conditions = _filters(dataset, timezone, request.where, request.refine, request.exclude)
    where = _where_sql(conditions)
    view = _view(dataset)
    selects = parse_select(request.select) if request.select and request.select.strip() else None
    groups = (
        parse_group_by(request.group_by) if request.group_by and request.group_by.strip() else None
    )
    orders = (
        parse_order_by(request.order_by) if request.order_by and request.order_by.strip() else None
    )
    if groups:
        return _grouped_plan(dataset, timezone, view, where, selects, groups, orders)
    if selects and _has_aggregate(selects):
        return _aggregate_plan(dataset, timezone, view, where, selects, orders)
    return _row_plan(dataset, timezone, view, where, selects, orders)


def _row_plan(
    dataset: Dataset,
    timezone: str,
    view: Fragment,
    where: Fragment,
    selects: Sequence[SelectItem] | None,
    orders: Sequence[OrderItem] | None,
) -> _Plan:
    compiler = Compiler(dataset, timezone, "select")
    outputs: list[Typed] = []
    names: list[tuple[str, int]] = []
    aliases: dict[str, Expr] = {}
    for item in selects or (SelectItem(None, None, "*", 1),):
        if item.expr is None:
            for f in dataset.fields:
                outputs.append(Typed(Fragment(sql.Identifier(f.name)), f.type))
                names.append((f.name, item.pos))
            continue
        outputs.append(compiler.value(item.expr))
        names.append((_item_name(item), item.pos))
        if item.alias is not None:
            aliases[item.alias] = item.expr
    _names(names, "select")
    if orders:
        order = _order_sql(
            Compiler(
                dataset,
                timezone,
                "order_by",
                aggregate_error="{}() in order_by needs group_by or an aggregation in select",
            ),
            orders,
            aliases,
        )
    else:
        order = _default_order(dataset)
    body = sql_fragment("SELECT {} FROM {}{}{}", _columns_sql(outputs), view, where, order)
    count = sql_fragment("SELECT count(*) FROM {}{}", view, where)
    return _Plan(body, count, _to_columns(names, outputs), grouped=False)


def _aggregate_plan(
    dataset: Dataset,
    timezone: str,
    view: Fragment,
    where: Fragment,
    selects: Sequence[SelectItem],
    orders: Sequence[OrderItem] | None,
) -> _Plan:
    """Aggregations over every matching row: one result row."""
    compiler = Compiler(dataset, timezone, "select", allow_aggregates=True, grouped=True)
    outputs, names, aliases = _grouped_selects(compiler, selects, {})
    order = Fragment(sql.SQL(""))
    if orders:
        order_compiler = Compiler(
            dataset, timezone, "order_by", allow_aggregates=True, grouped=True
        )
        order = _order_sql(order_compiler, orders, aliases)
    body = sql_fragment("SELECT {} FROM {}{}{}", _columns_sql(outputs), view, where, order)
    return _Plan(body, Fragment(sql.SQL("SELECT 1")), _to_columns(names, outputs), grouped=True)


def _grouped_selects(
    compiler: Compiler, selects: Sequence[SelectItem], group_aliases: Mapping[str, Expr]
) -> tuple[list[Typed], list[tuple[str, int]], dict[str, Expr]]:
    outputs: list[Typed] = []
    names: list[tuple[str, int]] = []
    aliases: dict[str, Expr] = {}
    for item in selects:
        if item.expr is None:
            raise ODSQLError(
                "select", item.pos, "'*' cannot be used with group_by or an aggregation"
            )
        expr = item.expr
        if isinstance(expr, FieldRef) and expr.name in group_aliases:
            expr = group_aliases[expr.name]
        outputs.append(compiler.value(expr))
        names.append((_item_name(item), item.pos))
        if item.alias is not None:
            aliases[item.alias] = expr
    return outputs, names, aliases


def _grouped_plan(
    dataset: Dataset,
    timezone: str,
    view: Fragment,
    where: Fragment,
    selects: Sequence[SelectItem] | None,
    groups: Sequence[GroupItem],
    orders: Sequence[OrderItem] | None,
) -> _Plan:
    """group_by: the group expressions are computed once per row in an inner query (so a
    parameterised expression is grouped by its column, not re-matched), then grouped."""
    group_compiler = Compiler(dataset, timezone, "group_by")
    keys: dict[Expr, Typed] = {}
    key_columns: list[Fragment] = []
    group_aliases: dict[str, Expr] = {}
    key_sql: list[Fragment] = []
    for i, item in enumerate(groups):
        typed = group_compiler.group_expr(item.expr)
        column = Fragment(sql.Identifier(_GROUP_KEY.format(i)))
        key_columns.append(column)
        key_sql.append(sql_fragment("{} AS {}", _output(typed), column))
        keys.setdefault(
            item.expr, Typed(column, "double" if typed.type == "numeric" else typed.type)
        )
        if item.alias is not None:
            group_aliases[item.alias] = item.expr
    fields = [Fragment(sql.Identifier(f.name)) for f in dataset.fields]
    inner = sql_fragment(
        "SELECT {}, {} FROM {}{}", join(", ", fields), join(", ", key_sql), view, where
    )
    source = sql_fragment("({}) AS _odsql_rows", inner)
    group_by = sql_fragment(" GROUP BY {}", join(", ", key_columns))

    compiler = Compiler(dataset, timezone, "select", allow_aggregates=True, grouped=True, keys=keys)
    if selects:
        outputs, names, aliases = _grouped_selects(compiler, selects, group_aliases)
    else:
        outputs = [keys[item.expr] for item in groups]
        names = [(item.alias or _text_name(item.expr, item.text), item.pos) for item in groups]
        aliases = {}
    _names(names, "select")
    if orders:
        order_compiler = Compiler(
            dataset, timezone, "order_by", allow_aggregates=True, grouped=True, keys=keys
        )
        order = _order_sql(order_compiler, orders, {**group_aliases, **aliases})
    else:
        order = sql_fragment(
            " ORDER BY {}",
            join(", ", (sql_fragment("{} ASC NULLS LAST", c) for c in key_columns)),
        )
    body = sql_fragment("SELECT {} FROM {}{}{}", _columns_sql(outputs), source, group_by, order)
    count = sql_fragment(
        "SELECT count(*) FROM (SELECT 1 FROM {}{}) AS _odsql_groups", source, group_by
    )
    return _Plan(body, count, _to_columns(names, outputs), grouped=True)


def _item_name(item: SelectItem) -> str:
    if item.alias is not None:
        return item.alias
    assert item.expr is not None
    return _text_name(item.expr, item.text)


def _text_name(expr: Expr, text: str) -> str:
    return expr.name if isinstance(expr, FieldRef) else text


def _to_columns(
    names: Sequence[tuple[str, int]], outputs: Sequence[Typed]
) -> tuple[OutputColumn, ...]:
    return tuple(
        OutputColumn(name, output_type(typed.type))
        for (name, _), typed in zip(names, outputs, strict=True)
    )


def build_records(dataset: Dataset, request: RecordsRequest) -> CompiledRecords:
    """The records endpoint's page and ``total_count`` queries."""
    plan = _plan(dataset, request)
    limit, offset = _limits(request.limit, request.offset, plan.grouped)
    page = sql_fragment(
        "{} LIMIT {} OFFSET {}", plan.body, _param(limit, "bigint"), _param(offset, "bigint")
    )
    return CompiledRecords(
        query=sql.Composed([page.sql]),
        params=page.params,
        count_query=sql.Composed([plan.count.sql]),
        count_params=plan.count.params,
        columns=plan.columns,
        timezone=request.timezone,
        limit=limit,
        offset=offset,
    )


def build_export(dataset: Dataset, request: RecordsRequest) -> CompiledExport:
    """An export's query: no row limit (``limit`` -1, the default for exports), or the first
    ``limit`` rows after ``offset``."""
    plan = _plan(dataset, request)
    if request.limit < -1:
        raise InvalidParameterError(
            "limit",
            f"Invalid value for limit API parameter: {request.limit} was found but limit >= -1 "
            "is expected.",
        )
    if request.offset < 0:
        raise InvalidParameterError(
            "offset",
            f"Invalid value for offset API parameter: {request.offset} was found but offset >= 0 "
            "is expected.",
        )
    body = plan.body
    if request.limit >= 0:
        body = sql_fragment("{} LIMIT {}", body, _param(request.limit, "bigint"))
    if request.offset:
        body = sql_fragment("{} OFFSET {}", body, _param(request.offset, "bigint"))
    return CompiledExport(
        query=sql.Composed([body.sql]),
        params=body.params,
        columns=plan.columns,
        timezone=request.timezone,
    )


# --- v1 search -----------------------------------------------------------------------------


def build_v1_search(
    dataset: Dataset,
    *,
    q: str | None = None,
    rows: int = DEFAULT_LIMIT,
    start: int = 0,
    sort: str | None = None,
    refine: Mapping[str, Sequence[str]] | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
    facets: Sequence[str] = (),
    fields: Sequence[str] | None = None,
    timezone: str = "UTC",
) -> CompiledV1Search:
    """The v1 ``/api/records/1.0/search/`` queries: rows, count and one query per facet.

    ``q`` is a full-text search over the text fields; ``refine.<field>`` values of one field
    are alternatives, different fields and ``exclude.<field>`` all apply; ``sort`` is a
    comma-separated list, ``field`` descending and ``-field`` ascending.
    """
    timezone = validate_timezone(timezone)
    if not 0 <= rows <= V1_MAX_ROWS:
        raise InvalidParameterError(
            "rows",
            f"Invalid value for rows API parameter: {rows} was found but 0 <= rows <= "
            f"{V1_MAX_ROWS} is expected.",
        )
    if start < 0 or start + rows > MAX_WINDOW:
        raise InvalidParameterError(
            "start",
            f"Invalid value for start API parameter: {start} was found but start >= 0 and "
            f"start + rows <= {MAX_WINDOW} is expected.",
        )
    refine = refine or {}
    exclude = exclude or {}
    if (
        sum(len(v) for v in refine.values()) + sum(len(v) for v in exclude.values()) + len(facets)
        > MAX_FILTERS
    ):
        raise InvalidParameterError(
            "refine",
            f"Invalid value for refine API parameter: at most {MAX_FILTERS} refine, "
            "exclude and facet parameters are expected.",
        )
    conditions: list[Fragment] = []
    if q is not None and q.strip():
        check_text("q", q)
        text_columns = [
            Fragment(sql.Identifier(f.name)) for f in dataset.fields if f.type == "text"
        ]
        conditions.append(fulltext(q, text_columns))
    for name, values in refine.items():
        alternatives = [
            _match(dataset, name, _checked("refine", v), timezone, "refine") for v in values
        ]
        if alternatives:
            conditions.append(sql_fragment("({})", join(" OR ", alternatives)))
    for name, values in exclude.items():
        conditions.extend(
            sql_fragment(
                "(NOT coalesce({}, FALSE))",
                _match(dataset, name, _checked("exclude", v), timezone, "exclude"),
            )
            for v in values
        )
    where = _where_sql(conditions)
    view = _view(dataset)
    chosen = [dataset.field(_known(dataset, n, "fields")) for n in fields] if fields else None
    outputs = [Typed(Fragment(sql.Identifier(f.name)), f.type) for f in (chosen or dataset.fields)]
    names = [(f.name, 1) for f in (chosen or dataset.fields)]
    order = _v1_order(dataset, sort) if sort and sort.strip() else _default_order(dataset)
    body = sql_fragment(
        "SELECT {} FROM {}{}{} LIMIT {} OFFSET {}",
        _columns_sql(outputs),
        view,
        where,
        order,
        _param(rows, "bigint"),
        _param(start, "bigint"),
    )
    count = sql_fragment("SELECT count(*) FROM {}{}", view, where)
    facet_queries = tuple(_facet(dataset, name, view, where, timezone) for name in facets)
    return CompiledV1Search(
        query=sql.Composed([body.sql]),
        params=body.params,
        count_query=sql.Composed([count.sql]),
        count_params=count.params,
        columns=_to_columns(names, outputs),
        facets=facet_queries,
        timezone=timezone,
        rows=rows,
        start=start,
    )


def _checked(clause: str, value: str) -> str:
    check_text(clause, value)
    return value


def _known(dataset: Dataset, name: str, parameter: str) -> str:
    check_text(parameter, name)
    try:
        dataset.field(name)
    except KeyError:
        raise InvalidParameterError(
            parameter,
            f"Invalid value for {parameter} API parameter: unknown field {_shown(name)}.",
        ) from None
    return name


def _v1_order(dataset: Dataset, sort: str) -> Fragment:
    parts = []
    for spec in sort.split(","):
        spec = spec.strip()
        ascending = spec.startswith("-")
        name = _known(dataset, spec.lstrip("-").strip(), "sort")
        if dataset.field(name).type in GEO_TYPES:
            raise InvalidParameterError(
                "sort", f"Invalid value for sort API parameter: cannot sort on {name}."
            )
        direction = "ASC" if ascending else "DESC"
        parts.append(sql_fragment(f"{{}} {direction} NULLS LAST", Fragment(sql.Identifier(name))))
    return sql_fragment(" ORDER BY {}", join(", ", parts))


def _facet(
    dataset: Dataset, name: str, view: Fragment, where: Fragment, timezone: str
) -> FacetQuery:
    """Values of one field with their counts; dates by year in the request's timezone."""
    field_type = dataset.field(_known(dataset, name, "facet")).type
    column = Fragment(sql.Identifier(name))
    value_type: FieldType = field_type
    if field_type in GEO_TYPES:
        raise InvalidParameterError(
            "facet", f"Invalid value for facet API parameter: cannot facet on {name}."
        )
    if field_type == "datetime":
        value = sql_fragment(
            "to_char(({}) AT TIME ZONE {}, 'YYYY')", column, _param(timezone, "text")
        )
        value_type = "text"
    elif field_type == "date":
        value = sql_fragment("to_char({}, 'YYYY')", column)
        value_type = "text"
    else:
        value = column
    query = sql_fragment(
        "SELECT _odsql_value, count(*) FROM (SELECT {} AS _odsql_value FROM {}{}) AS _odsql_facet"
        " WHERE _odsql_value IS NOT NULL GROUP BY _odsql_value"
        " ORDER BY count(*) DESC, _odsql_value ASC LIMIT {}",
        value,
        view,
        where,
        _param(V1_FACET_VALUES, "bigint"),
    )
    return FacetQuery(name, sql.Composed([query.sql]), query.params, value_type)
