"""ODSQL syntax trees → parameterised PostgreSQL over one dataset's view, with type checks.

Safety rules, which the fuzz tests hold the compiler to:

- every value written in a clause reaches PostgreSQL as a query parameter, with an explicit cast;
  SQL text comes only from this module's constants;
- a name is accepted only when it is one of the dataset's fields (then quoted with
  ``sql.Identifier``), so hidden ``_`` columns and other relations cannot be named;
- whatever PostgreSQL could refuse at run time is refused here first or made total: division by
  zero gives null, arithmetic runs in ``numeric`` (no overflow within the parser's operator
  bound), a computed number leaves as a double or null, ``asin`` never sees more than 1, date
  literals and intervals are range-checked.

Types are the portal's field types plus ``numeric`` (a computed number; the API shows it as a
double) and ``null`` (the ``null`` literal).

Sources: ODSQL (OpenDataSoft Explore API v2.1, https://help.opendatasoft.com/apis/ods-explore-v2/);
date_format letters are Joda-Time's DateTimeFormat, mapped to PostgreSQL's ``to_char`` template
patterns (PostgreSQL 15 manual, 9.8 "Data Type Formatting Functions").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import chain
from typing import Any, Literal
from zoneinfo import ZoneInfo

from psycopg import sql

from sinks.opendata._catalog import Dataset, FieldType
from sinks.opendata._odsql import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Const,
    DateLiteral,
    Expr,
    FieldRef,
    GeomLiteral,
    InList,
    IsBool,
    IsNull,
    Like,
    Negate,
    Not,
    ODSQLError,
    Quantity,
    Star,
)

__all__ = [
    "EARTH_RADIUS_M",
    "Compiler",
    "Fragment",
    "Typed",
    "ValueType",
    "fulltext",
    "join",
    "like_pattern",
    "output_type",
    "parse_date_text",
    "safe_double",
    "sql_fragment",
    "to_char_template",
]

ValueType = Literal[
    "text",
    "int",
    "double",
    "boolean",
    "date",
    "datetime",
    "geo_point_2d",
    "geo_shape",
    "numeric",
    "null",
]

#: Mean Earth radius R1 = 6,371,008.8 m (IUGG; H. Moritz, "Geodetic Reference System 1980",
#: Bulletin Géodésique 54, 1980), the usual sphere for great-circle distances.
EARTH_RADIUS_M = 6_371_008.8

_NUMBERS = frozenset({"int", "double", "numeric"})
_DATES = frozenset({"date", "datetime"})
_AGGREGATES = frozenset({"count", "avg", "sum", "min", "max", "median", "percentile"})
#: Distance units of ``within_distance`` (ODSQL: mi, yd, ft, m, cm, km, mm), in metres.
_DISTANCE_UNITS = {
    "mi": 1609.344,
    "yd": 0.9144,
    "ft": 0.3048,
    "m": 1.0,
    "cm": 0.01,
    "km": 1000.0,
    "mm": 0.001,
}


# --- SQL fragments with their parameters ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fragment:
    """SQL with positional ``%s`` placeholders and their values, in textual order, so fragments
    compose without ever renumbering parameters."""

    sql: sql.Composable
    params: tuple[Any, ...] = ()


def sql_fragment(template: str, *parts: Fragment) -> Fragment:
    """``template``'s ``{}`` filled with ``parts`` in order (each ``{}`` once, left to right)."""
    return Fragment(
        sql.SQL(template).format(*(p.sql for p in parts)),
        tuple(chain.from_iterable(p.params for p in parts)),
    )


def join(separator: str, parts: Iterable[Fragment]) -> Fragment:
    listed = list(parts)
    return Fragment(
        sql.SQL(separator).join(p.sql for p in listed),
        tuple(chain.from_iterable(p.params for p in listed)),
    )


def _param(value: Any, cast: str) -> Fragment:
    # ``cast`` is always one of this module's constants, never input.
    return Fragment(sql.SQL(f"(%s::{cast})"), (value,))


def _ident(name: str) -> Fragment:
    return Fragment(sql.Identifier(name))


_TRUE = Fragment(sql.SQL("TRUE"))
_FALSE = Fragment(sql.SQL("FALSE"))


@dataclass(frozen=True, slots=True)
class Typed:
    """A compiled expression and what it is."""

    frag: Fragment
    type: ValueType
    aggregate: bool = False
    #: A string literal's value, which becomes a date next to a date field.
    text_literal: str | None = None
    #: A date literal written without a time (``date'2026-01-01'``), kept as a date.
    date_value: date | None = None


def output_type(value_type: ValueType) -> FieldType:
    """The portal type an output column of ``value_type`` is shown as."""
    if value_type == "numeric":
        return "double"
    if value_type == "null":
        return "text"
    return value_type


def safe_double(frag: Fragment) -> Fragment:
    """A ``numeric`` as ``float8``, or null where a double cannot hold it (beyond ±1e308,
    NaN, infinite); below 1e-300 it rounds to zero rather than underflow."""
    return sql_fragment("(CASE WHEN abs({}) <= 1e308 THEN round({}, 300)::float8 END)", frag, frag)


# --- literals ------------------------------------------------------------------------------

_DATE_ONLY = re.compile(r"(\d{4})(?:[-/](\d{1,2})(?:[-/](\d{1,2}))?)?")


def parse_date_text(text: str, timezone: str) -> tuple[datetime, date | None]:
    """A date literal's instant, and its date when written without a time.

    Accepts ODSQL's forms: ISO 8601 (``2026``, ``2026-01``, ``2026-01-15``,
    ``2026-01-15T08:30[:00[.000000]][Z|±hh:mm]``) and ``YYYY/MM/DD``. A time without an offset
    is in ``timezone``, as the portal reads it.
    """
    text = text.strip()
    zone = ZoneInfo(timezone)
    match = _DATE_ONLY.fullmatch(text)
    try:
        if match:
            year, month, day = (int(g) if g else 1 for g in match.groups())
            day_value = date(year, month, day)
            return datetime(year, month, day, tzinfo=zone), day_value
        if not re.fullmatch(r"\d{4}[-/]\d{2}[-/]\d{2}[T ][0-9:.+\-Z]+", text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (ISO 8601 or YYYY/MM/DD expected)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment, None


def like_pattern(text: str) -> str:
    """An ODSQL ``like`` text as a PostgreSQL ILIKE pattern: the text anywhere in the value,
    ``*`` (and ``%``) standing for any characters, ``_`` and ``\\`` themselves."""
    out = []
    for char in text:
        if char in "*%":
            out.append("%")
        elif char in "_\\":
            out.append("\\" + char)
        else:
            out.append(char)
    return "%" + "".join(out) + "%"


def fulltext(text: str, columns: Sequence[Fragment]) -> Fragment:
    """Full-text search as the portal does it, approximated with ILIKE: every word of ``text``
    (a trailing ``*`` asks for a prefix, which a substring match covers) must appear in one of
    ``columns``, case-insensitively."""
    words = [w.rstrip("*") for w in text.split()]
    words = [w for w in words if w]
    if not words:
        return _TRUE
    if not columns:
        return _FALSE
    conditions = [
        sql_fragment(
            "({})",
            join(
                " OR ",
                (sql_fragment("{} ILIKE {}", c, _param(like_pattern(w), "text")) for c in columns),
            ),
        )
        for w in words
    ]
    return sql_fragment("({})", join(" AND ", conditions))


# --- date_format ---------------------------------------------------------------------------

#: Joda-Time pattern letters (what ODSQL's date_format takes) → to_char template patterns.
_DATE_FORMAT = {
    "yyyy": "YYYY",
    "YYYY": "YYYY",
    "yy": "YY",
    "YY": "YY",
    "y": "FMYYYY",
    "Y": "FMYYYY",
    "xxxx": "IYYY",
    "xx": "IY",
    "ww": "IW",
    "w": "FMIW",
    "e": "ID",
    "E": "Dy",
    "EE": "Dy",
    "EEE": "Dy",
    "EEEE": "FMDay",
    "D": "FMDDD",
    "DD": "FMDDD",
    "DDD": "DDD",
    "M": "FMMM",
    "MM": "MM",
    "MMM": "Mon",
    "MMMM": "FMMonth",
    "d": "FMDD",
    "dd": "DD",
    "H": "FMHH24",
    "HH": "HH24",
    "m": "FMMI",
    "mm": "MI",
    "s": "FMSS",
    "ss": "SS",
}
_DELIMITERS = frozenset(" ?,.:/-")


def to_char_template(pattern: str) -> str:
    """An ODSQL date_format pattern as a PostgreSQL to_char template; ValueError when a letter
    has no equivalent. Text in single quotes is literal (``''`` is one quote)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            if pattern[i + 1 : i + 2] == "'":  # '' outside quoted text: one quote
                out.append('"\'"')
                i += 2
                continue
            end = i + 1
            literal: list[str] = []
            while True:
                if end >= len(pattern):
                    raise ValueError("unterminated quoted text in the date format")
                if pattern[end] == "'":
                    if pattern[end + 1 : end + 2] == "'":
                        literal.append("'")
                        end += 2
                        continue
                    break
                literal.append(pattern[end])
                end += 1
            escaped = "".join(literal).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{escaped}"')
            i = end + 1
        elif char in _DELIMITERS:
            out.append(char)
            i += 1
        else:
            run = i
            while run < len(pattern) and pattern[run] == char:
                run += 1
            letters = pattern[i:run]
            if letters not in _DATE_FORMAT:
                raise ValueError(
                    f"{letters!r} is not a date format pattern (yyyy, yy, xxxx, ww, w, e, E, EEEE, "
                    "D, DDD, M, MM, MMM, MMMM, d, dd, H, HH, m, mm, s, ss, 'text')"
                )
            out.append(_DATE_FORMAT[letters])
            i = run
    return "".join(out)


# --- the compiler --------------------------------------------------------------------------

_RANGE_UNITS: dict[str, tuple[str, int]] = {
    # unit → (fixed-length step or calendar unit, seconds per unit; 0 for calendar units)
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), ("fixed", 0)),
    **dict.fromkeys(("s", "second", "seconds"), ("fixed", 1)),
    **dict.fromkeys(("m", "minute", "minutes"), ("fixed", 60)),
    **dict.fromkeys(("h", "hour", "hours"), ("fixed", 3600)),
    **dict.fromkeys(("d", "day", "days"), ("fixed", 86_400)),
    **dict.fromkeys(("w", "week", "weeks"), ("fixed", 604_800)),
    **dict.fromkeys(("M", "month", "months"), ("month", 0)),
    **dict.fromkeys(("q", "quarter", "quarters"), ("quarter", 0)),
    **dict.fromkeys(("y", "year", "years"), ("year", 0)),
}
#: now(years=…, months=…, …) arguments and their length in days, for the range check.
_NOW_UNITS = {
    "years": 366.0,
    "months": 31.0,
    "weeks": 7.0,
    "days": 1.0,
    "hours": 1 / 24,
    "minutes": 1 / 1440,
    "seconds": 1 / 86_400,
}
_NOW_SQL_NAMES = {"minutes": "mins", "seconds": "secs"}
#: now() may move at most this far (timestamps stay well inside PostgreSQL's range).
_NOW_MAX_DAYS = 366 * 1000


@dataclass
class Compiler:
    """Compiles one clause's expressions against a dataset.

    ``keys`` (group_by mode) maps group expressions to the compiled columns that hold them:
    outside an aggregation, an expression must be one of them or made of them.
    """

    dataset: Dataset
    timezone: str
    clause: str
    allow_aggregates: bool = False
    grouped: bool = False
    keys: Mapping[Expr, Typed] = field(default_factory=dict)
    #: The message for an aggregation where none is allowed (``{}`` is the function).
    aggregate_error: str = "{}() is only allowed in select and order_by"

    def error(self, node: Expr | None, message: str) -> ODSQLError:
        position = getattr(node, "pos", None) if node is not None else None
        return ODSQLError(self.clause, position or None, message)

    # -- conditions --

    def condition(self, node: Expr) -> Fragment:
        """A where-style condition: a bare string is a full-text search."""
        return self.condition_in(node, in_aggregate=False).frag

    def text_columns(self) -> list[Fragment]:
        return [_ident(f.name) for f in self.dataset.fields if f.type == "text"]

    # -- values --

    def value(self, node: Expr, in_aggregate: bool = False) -> Typed:
        if not in_aggregate and node in self.keys:
            return self.keys[node]
        if isinstance(node, FieldRef):
            return self.field(node, in_aggregate)
        if isinstance(node, Const):
            return self.literal(node)
        if isinstance(node, DateLiteral):
            return self.date_literal(node)
        if isinstance(node, Negate):
            return self.negate(node, in_aggregate)
        if isinstance(node, Arith):
            return self.arith(node, in_aggregate)
        if isinstance(node, Compare):
            return self.compare(node, in_aggregate)
        if isinstance(node, BoolOp):
            parts = [self.condition_in(o, in_aggregate) for o in node.operands]
            separator = " AND " if node.op == "and" else " OR "
            return Typed(
                sql_fragment("({})", join(separator, (p.frag for p in parts))),
                "boolean",
                aggregate=any(p.aggregate for p in parts),
            )
        if isinstance(node, Not):
            inner = self.condition_in(node.operand, in_aggregate)
            return replace(inner, frag=sql_fragment("(NOT {})", inner.frag))
        if isinstance(node, IsNull):
            operand = self.value(node.operand, in_aggregate)
            template = "({} IS NOT NULL)" if node.negated else "({} IS NULL)"
            return Typed(sql_fragment(template, operand.frag), "boolean", operand.aggregate)
        if isinstance(node, IsBool):
            operand = self.value(node.operand, in_aggregate)
            if operand.type != "boolean":
                raise self.error(node, f"'is true/false' needs a boolean, not {operand.type}")
            template = "({} IS TRUE)" if node.value else "({} IS FALSE)"
            return Typed(sql_fragment(template, operand.frag), "boolean", operand.aggregate)
        if isinstance(node, InList):
            return self.in_list(node, in_aggregate)
        if isinstance(node, Like):
            return self.like(node, in_aggregate)
        if isinstance(node, Call):
            return self.call(node, in_aggregate)
        if isinstance(node, GeomLiteral):
            raise self.error(node, "a geometry is only an argument of within_distance or distance")
        if isinstance(node, Quantity):
            raise self.error(node, f"a quantity ({node.value}{node.unit}) is not a value here")
        if isinstance(node, Star):
            raise self.error(node, "'*' is only allowed alone in select or in count(*)")
        raise self.error(None, "unsupported expression")  # pragma: no cover

    def condition_in(self, node: Expr, in_aggregate: bool) -> Typed:
        if isinstance(node, Const) and isinstance(node.value, str):
            return Typed(fulltext(node.value, self.text_columns()), "boolean")
        typed = self.value(node, in_aggregate)
        if typed.type != "boolean":
            raise self.error(node, f"a condition is expected here, not a {typed.type} value")
        return typed

    def field(self, node: FieldRef, in_aggregate: bool) -> Typed:
        try:
            field_type = self.dataset.field(node.name).type
        except KeyError:
            raise self.error(node, f"Unknown field: {node.name}") from None
        if self.grouped and not in_aggregate:
            raise self.error(
                node,
                f"field {node.name!r} must be in group_by or inside an aggregation "
                "(count, avg, sum, min, max)",
            )
        return Typed(_ident(node.name), field_type)

    def literal(self, node: Const) -> Typed:
        value = node.value
        if value is None:
            return Typed(Fragment(sql.SQL("NULL")), "null")
        if isinstance(value, bool):
            return Typed(_param(value, "boolean"), "boolean")
        if isinstance(value, Decimal):
            return Typed(_param(value, "numeric"), "numeric")
        return Typed(_param(value, "text"), "text", text_literal=value)

    def date_literal(self, node: DateLiteral) -> Typed:
        try:
            moment, day = parse_date_text(node.text, self.timezone)
        except ValueError as exc:
            raise self.error(node, str(exc)) from None
        return Typed(_param(moment, "timestamptz"), "datetime", date_value=day)

    def negate(self, node: Negate, in_aggregate: bool) -> Typed:
        if isinstance(node.operand, Const) and isinstance(node.operand.value, Decimal):
            return Typed(_param(-node.operand.value, "numeric"), "numeric")
        operand = self.value(node.operand, in_aggregate)
        if operand.type not in _NUMBERS:
            raise self.error(node, f"'-' needs a number, not {operand.type}")
        return Typed(sql_fragment("(-({})::numeric)", operand.frag), "numeric", operand.aggregate)

    def arith(self, node: Arith, in_aggregate: bool) -> Typed:
        operands = [self.value(o, in_aggregate) for o in node.operands]
        for operand, source in zip(operands, node.operands, strict=True):
            if operand.type not in _NUMBERS:
                raise self.error(source, f"arithmetic needs numbers, not {operand.type}")
        parts = [sql_fragment("({})::numeric", operands[0].frag)]
        for op, operand in zip(node.ops, operands[1:], strict=True):
            if op == "/":
                parts.append(sql_fragment(" / NULLIF(({})::numeric, 0)", operand.frag))
            else:
                parts.append(sql_fragment(f" {op} ({{}})::numeric", operand.frag))
        return Typed(
            sql_fragment("({})", join("", parts)),
            "numeric",
            aggregate=any(o.aggregate for o in operands),
        )

    # -- comparisons --

    def compare(self, node: Compare, in_aggregate: bool) -> Typed:
        left = self.value(node.left, in_aggregate)
        right = self.value(node.right, in_aggregate)
        lfrag, rfrag = self.comparable(node, left, right)
        op = "<>" if node.op == "!=" else node.op
        return Typed(
            sql_fragment(f"({{}} {op} {{}})", lfrag, rfrag),
            "boolean",
            aggregate=left.aggregate or right.aggregate,
        )

    def comparable(self, node: Expr, left: Typed, right: Typed) -> tuple[Fragment, Fragment]:
        """Both sides as SQL of one comparable type, or an error naming the mismatch."""
        if "null" in (left.type, right.type):
            raise self.error(node, "comparing with null is never true: use 'is null'")
        if left.type in _DATES or right.type in _DATES:
            left, right = self.as_date(node, left), self.as_date(node, right)
            if left.type == "date" and right.date_value is not None:
                return left.frag, _param(right.date_value, "date")
            if right.type == "date" and left.date_value is not None:
                return _param(left.date_value, "date"), right.frag
            if left.type == right.type:
                return left.frag, right.frag
            return self.as_instant(left), self.as_instant(right)
        if left.type in _NUMBERS and right.type in _NUMBERS:
            if "numeric" in (left.type, right.type):
                return (
                    sql_fragment("({})::numeric", left.frag),
                    sql_fragment("({})::numeric", right.frag),
                )
            return left.frag, right.frag
        if left.type == right.type and left.type in ("text", "boolean"):
            return left.frag, right.frag
        raise self.error(node, f"cannot compare {left.type} with {right.type}")

    def as_date(self, node: Expr, typed: Typed) -> Typed:
        """A string literal next to a date becomes a date; a date literal without a time stays
        a day when the other side is a date field."""
        if typed.type in _DATES:
            return typed
        if typed.text_literal is not None:
            try:
                moment, day = parse_date_text(typed.text_literal, self.timezone)
            except ValueError as exc:
                raise self.error(node, str(exc)) from None
            return Typed(_param(moment, "timestamptz"), "datetime", date_value=day)
        raise self.error(node, f"cannot compare a date with {typed.type}")

    def as_instant(self, typed: Typed) -> Fragment:
        if typed.type == "datetime":
            return typed.frag
        return sql_fragment("(({})::timestamp AT TIME ZONE {})", typed.frag, self.tz_param())

    def tz_param(self) -> Fragment:
        return _param(self.timezone, "text")

    def in_list(self, node: InList, in_aggregate: bool) -> Typed:
        operand = self.value(node.operand, in_aggregate)
        equalities = []
        aggregate = operand.aggregate
        for item_node in node.items:
            item = self.value(item_node, in_aggregate)
            aggregate = aggregate or item.aggregate
            left, right = self.comparable(item_node, operand, item)
            equalities.append(sql_fragment("{} = {}", left, right))
        template = "(NOT ({}))" if node.negated else "({})"
        return Typed(sql_fragment(template, join(" OR ", equalities)), "boolean", aggregate)

    def like(self, node: Like, in_aggregate: bool) -> Typed:
        operand = self.value(node.operand, in_aggregate)
        if operand.type != "text":
            raise self.error(node, f"'like' needs a text field, not {operand.type}")
        if not (isinstance(node.pattern, Const) and isinstance(node.pattern.value, str)):
            raise self.error(node.pattern, "'like' needs a string after it")
        # OpenDataSoft's ODSQL reference ("Like filter", Explore API v2 documentation):
        # ``film_name like "star"`` matches "star wars" and "Star Trek" (contained, any case),
        # ``like "star wars"`` matches values containing "star" and "wars" (each word, anywhere).
        words = node.pattern.value.split() or [node.pattern.value]
        matches = join(
            " AND ",
            (
                sql_fragment("({} ILIKE {})", operand.frag, _param(like_pattern(w), "text"))
                for w in words
            ),
        )
        template = "(NOT ({}))" if node.negated else "({})"
        return Typed(sql_fragment(template, matches), "boolean", operand.aggregate)

    # -- functions --

    def call(self, node: Call, in_aggregate: bool) -> Typed:
        if node.name in _AGGREGATES:
            return self.aggregate(node, in_aggregate)
        handler = _SCALARS.get(node.name)
        if handler is None:
            if node.name == "range":
                raise self.error(node, "range() is only allowed in group_by")
            raise self.error(node, f"Unknown function: {node.name}")
        return handler(self, node, in_aggregate)

    def args(self, node: Call, count: int) -> tuple[Expr, ...]:
        if len(node.args) != count:
            plural = "s" if count != 1 else ""
            raise self.error(node, f"{node.name}() takes {count} argument{plural}")
        return node.args

    def aggregate(self, node: Call, in_aggregate: bool) -> Typed:
        if not self.allow_aggregates:
            raise self.error(node, self.aggregate_error.format(node.name))
        if in_aggregate:
            raise self.error(node, "an aggregation cannot contain another one")
        name = node.name
        if name == "count":
            (arg,) = self.args(node, 1)
            if isinstance(arg, Star):
                return Typed(Fragment(sql.SQL("count(*)")), "int", aggregate=True)
            counted = self.value(arg, in_aggregate=True)
            return Typed(sql_fragment("count({})", counted.frag), "int", aggregate=True)
        if name == "percentile":
            arg, rank_node = self.args(node, 2)
            rank = _number_literal(rank_node)
            if rank is None or not 0 <= rank <= 100:
                raise self.error(rank_node, "percentile() needs a number from 0 to 100")
            return self.percentile(node, arg, rank / 100)
        (arg,) = self.args(node, 1)
        if name == "median":
            return self.percentile(node, arg, Decimal("0.5"))
        operand = self.value(arg, in_aggregate=True)
        allowed = _NUMBERS if name in ("avg", "sum") else _NUMBERS | _DATES | {"text"}
        if operand.type not in allowed:
            raise self.error(arg, f"{name}() cannot take a {operand.type} value")
        result: ValueType = operand.type
        if name == "avg":
            result = "double" if operand.type == "double" else "numeric"
        return Typed(sql_fragment(f"{name}({{}})", operand.frag), result, aggregate=True)

    def percentile(self, node: Call, arg: Expr, fraction: Decimal) -> Typed:
        operand = self.value(arg, in_aggregate=True)
        if operand.type not in _NUMBERS:
            raise self.error(arg, f"{node.name}() cannot take a {operand.type} value")
        value = safe_double(sql_fragment("({})::numeric", operand.frag))
        return Typed(
            sql_fragment(
                "percentile_cont({}) WITHIN GROUP (ORDER BY {})", _param(fraction, "float8"), value
            ),
            "double",
            aggregate=True,
        )

    def local_time(self, typed: Typed, node: Expr) -> Fragment:
        """A date or datetime as the request's wall-clock timestamp."""
        if typed.type == "datetime":
            return sql_fragment("(({}) AT TIME ZONE {})", typed.frag, self.tz_param())
        if typed.type == "date":
            return sql_fragment("(({})::timestamp)", typed.frag)
        raise self.error(node, f"a date is expected, not {typed.type}")

    def date_part(self, node: Call, in_aggregate: bool) -> Typed:
        (arg,) = self.args(node, 1)
        operand = self.value(arg, in_aggregate)
        local = self.local_time(operand, arg)
        part = Fragment(sql.SQL(node.name))  # one of _DATE_PARTS, never input
        return Typed(
            sql_fragment("(floor(extract({} FROM {}))::int)", part, local), "int", operand.aggregate
        )

    def date_format(self, node: Call, in_aggregate: bool) -> Typed:
        arg, pattern_node = self.args(node, 2)
        operand = self.value(arg, in_aggregate)
        local = self.local_time(operand, arg)
        if not (isinstance(pattern_node, Const) and isinstance(pattern_node.value, str)):
            raise self.error(pattern_node, "date_format() needs a format string")
        try:
            template = to_char_template(pattern_node.value)
        except ValueError as exc:
            raise self.error(pattern_node, str(exc)) from None
        return Typed(
            sql_fragment("to_char({}, {})", local, _param(template, "text")),
            "text",
            operand.aggregate,
        )

    def text_function(self, node: Call, in_aggregate: bool) -> Typed:
        (arg,) = self.args(node, 1)
        operand = self.value(arg, in_aggregate)
        if operand.type != "text":
            raise self.error(arg, f"{node.name}() needs text, not {operand.type}")
        if node.name == "length":
            return Typed(sql_fragment("char_length({})", operand.frag), "int", operand.aggregate)
        function = "lower" if node.name == "lower" else "upper"
        return Typed(sql_fragment(f"{function}({{}})", operand.frag), "text", operand.aggregate)

    def now(self, node: Call, in_aggregate: bool) -> Typed:
        """``now()``, or moved: ``now(days=-1)``, ``now(hours=-2, minutes=30)``."""
        if not node.args:
            return Typed(Fragment(sql.SQL("now()")), "datetime")
        shifts: dict[str, int] = {}
        for arg in node.args:
            unit, amount = None, None
            if isinstance(arg, Compare) and arg.op == "=" and isinstance(arg.left, FieldRef):
                unit, amount = arg.left.name.lower(), _number_literal(arg.right)
            if unit not in _NOW_UNITS or amount is None or amount != int(amount):
                raise self.error(
                    arg,
                    "now() takes whole-number shifts: years, months, weeks, days, hours, minutes, "
                    "seconds (now(days=-1))",
                )
            if unit in shifts:
                raise self.error(arg, f"now() takes {unit} once")
            shifts[unit] = int(amount)
        if sum(abs(v) * _NOW_UNITS[u] for u, v in shifts.items()) > _NOW_MAX_DAYS:
            raise self.error(node, "now() cannot move more than 1000 years")
        named = [
            sql_fragment(f"{_NOW_SQL_NAMES.get(unit, unit)} => {{}}", _param(amount, "int"))
            for unit, amount in shifts.items()
        ]
        return Typed(sql_fragment("(now() + make_interval({}))", join(", ", named)), "datetime")

    def geo(self, arg: Expr, in_aggregate: bool) -> Typed:
        operand = self.value(arg, in_aggregate)
        if operand.type != "geo_point_2d":
            raise self.error(arg, f"a geo_point_2d field is expected, not {operand.type}")
        return operand

    def distance_to(self, geo: Typed, point: GeomLiteral) -> Fragment:
        """Great-circle distance in metres by the haversine formula (R. W. Sinnott, "Virtues of
        the Haversine", Sky and Telescope 68(2), 1984) on the point's {"lon", "lat"} object;
        ``least(1, …)`` keeps rounding from pushing asin out of its domain, and the CASE keeps a
        missing position null (``least`` ignores nulls: it would make it half the globe away)."""
        lat = sql_fragment("(({}->>'lat')::float8)", geo.frag)
        lon = sql_fragment("(({}->>'lon')::float8)", geo.frag)
        lat0 = _param(point.lat, "float8")
        lon0 = _param(point.lon, "float8")
        return sql_fragment(
            "(CASE WHEN {} IS NOT NULL AND {} IS NOT NULL THEN 2 * {} * asin(least(1::float8, "
            "sqrt(power(sin(radians({} - {}) / 2), 2)"
            " + cos(radians({})) * cos(radians({})) * power(sin(radians({} - {}) / 2), 2)))) END)",
            lat,
            lon,
            _param(EARTH_RADIUS_M, "float8"),
            lat,
            lat0,
            lat0,
            lat,
            lon,
            lon0,
        )

    def point_arg(self, arg: Expr) -> GeomLiteral:
        if not isinstance(arg, GeomLiteral):
            raise self.error(arg, "a point is expected: geom'POINT(lon lat)'")
        return arg

    def distance(self, node: Call, in_aggregate: bool) -> Typed:
        geo_arg, point_arg = self.args(node, 2)
        geo = self.geo(geo_arg, in_aggregate)
        return Typed(self.distance_to(geo, self.point_arg(point_arg)), "double", geo.aggregate)

    def within_distance(self, node: Call, in_aggregate: bool) -> Typed:
        geo_arg, point_arg, radius_arg = self.args(node, 3)
        geo = self.geo(geo_arg, in_aggregate)
        point = self.point_arg(point_arg)
        if isinstance(radius_arg, Quantity):
            factor = _DISTANCE_UNITS.get(radius_arg.unit.lower())
            if factor is None:
                raise self.error(
                    radius_arg,
                    f"unknown distance unit {radius_arg.unit!r} (mi, yd, ft, m, cm, km, mm)",
                )
            metres = float(radius_arg.value) * factor
        else:
            number = _number_literal(radius_arg)
            if number is None:
                raise self.error(radius_arg, "a distance is expected (500m, 1km)")
            metres = float(number)
        if metres < 0:
            raise self.error(radius_arg, "a distance cannot be negative")
        return Typed(
            sql_fragment("({} <= {})", self.distance_to(geo, point), _param(metres, "float8")),
            "boolean",
            geo.aggregate,
        )

    def in_bbox(self, node: Call, in_aggregate: bool) -> Typed:
        """``in_bbox(field, lat1, lon1, lat2, lon2)``: inside the box of two opposite corners."""
        geo_arg, *corner_args = self.args(node, 5)
        geo = self.geo(geo_arg, in_aggregate)
        corners = [_number_literal(a) for a in corner_args]
        for value, arg, limit in zip(corners, corner_args, (90, 180, 90, 180), strict=True):
            if value is None or abs(value) > limit:
                raise self.error(arg, f"a number from -{limit} to {limit} is expected")
        lat1, lon1, lat2, lon2 = (float(v) for v in corners if v is not None)
        lat = sql_fragment("(({}->>'lat')::float8)", geo.frag)
        lon = sql_fragment("(({}->>'lon')::float8)", geo.frag)
        return Typed(
            sql_fragment(
                "({} BETWEEN {} AND {} AND {} BETWEEN {} AND {})",
                lat,
                _param(min(lat1, lat2), "float8"),
                _param(max(lat1, lat2), "float8"),
                lon,
                _param(min(lon1, lon2), "float8"),
                _param(max(lon1, lon2), "float8"),
            ),
            "boolean",
            geo.aggregate,
        )

    def search(self, node: Call, in_aggregate: bool) -> Typed:
        """``search("text")`` over every text field, ``search(f1, f2, "text")`` over some;
        ``startswith`` the same with each word at the start of a word of the value."""
        if not node.args:
            raise self.error(node, f"{node.name}() needs a text to look for")
        *field_args, text_arg = node.args
        if not (isinstance(text_arg, Const) and isinstance(text_arg.value, str)):
            raise self.error(text_arg, f"{node.name}() needs a string as its last argument")
        columns = []
        for arg in field_args:
            operand = self.value(arg, in_aggregate)
            if operand.type != "text" or not isinstance(arg, FieldRef):
                raise self.error(arg, f"{node.name}() searches text fields only")
            columns.append(operand.frag)
        if not field_args:
            columns = self.text_columns()
        if node.name == "search":
            return Typed(fulltext(text_arg.value, columns), "boolean")
        words = [w.rstrip("*") for w in text_arg.value.split() if w.rstrip("*")]
        conditions = []
        for word in words:
            prefix = like_pattern(word)[1:]  # anchored at the start
            alternatives = [
                sql_fragment(
                    "({} ILIKE {} OR {} ILIKE {})",
                    c,
                    _param(prefix, "text"),
                    c,
                    _param("% " + prefix, "text"),
                )
                for c in columns
            ]
            conditions.append(sql_fragment("({})", join(" OR ", alternatives or [_FALSE])))
        if not conditions:
            return Typed(_TRUE, "boolean")
        return Typed(sql_fragment("({})", join(" AND ", conditions)), "boolean")

    # -- group_by --

    def group_expr(self, node: Expr) -> Typed:
        """A group_by expression: any row expression, or a range() histogram bucket."""
        if isinstance(node, Call) and node.name == "range":
            return self.range_bucket(node)
        typed = self.value(node)
        if typed.aggregate:  # pragma: no cover - aggregates are refused in group_by already
            raise self.error(node, "group_by cannot hold an aggregation")
        if typed.type in ("geo_point_2d", "geo_shape"):
            raise self.error(node, f"cannot group by a {typed.type} field")
        return typed

    def range_bucket(self, node: Call) -> Typed:
        """``range(field, width)``: equal-width buckets, each shown as its lower bound. Numbers
        take a number; dates take ``N unit`` (ms, s, m, h, d, w; 1 M, 1 q, 1 y), buckets
        aligned in the request's timezone, weeks starting on Monday."""
        arg, step = self.args(node, 2)
        operand = self.value(arg)
        if operand.type in _NUMBERS:
            width = _number_literal(step)
            if width is None or width <= 0:
                raise self.error(step, "range() on a number needs a positive number as width")
            width_sql = _param(width, "numeric")
            return Typed(
                sql_fragment(
                    "(floor(({})::numeric / {}) * {})", operand.frag, width_sql, width_sql
                ),
                "numeric",
            )
        if operand.type not in _DATES:
            raise self.error(arg, f"range() takes a number or a date, not {operand.type}")
        if not isinstance(step, Quantity):
            raise self.error(step, "range() on a date needs an interval such as 1 day or 6h")
        unit = _RANGE_UNITS.get(step.unit) or _RANGE_UNITS.get(step.unit.lower())
        if step.unit in ("M", "m"):  # case decides: M is a month, m a minute
            unit = _RANGE_UNITS[step.unit]
        count = step.value
        if unit is None:
            raise self.error(step, f"unknown interval unit {step.unit!r}")
        if count != int(count) or count < 1:
            raise self.error(step, "range() needs a whole, positive number of units")
        local = self.local_time(operand, arg)
        kind, seconds = unit
        if kind == "fixed":
            milliseconds = int(count) * (seconds * 1000 if seconds else 1)
            if milliseconds > 100 * 366 * 86_400_000:
                raise self.error(step, "range() intervals are at most 100 years")
            bucket = sql_fragment(
                "date_bin({}, {}, TIMESTAMP '2000-01-03 00:00:00')",
                _param(timedelta(milliseconds=milliseconds), "interval"),
                local,
            )
        else:
            if count != 1:
                raise self.error(step, f"range() takes only 1 {step.unit}")
            bucket = sql_fragment("date_trunc({}, {})", _param(kind, "text"), local)
        if operand.type == "date":
            return Typed(sql_fragment("(({})::date)", bucket), "date")
        return Typed(sql_fragment("(({}) AT TIME ZONE {})", bucket, self.tz_param()), "datetime")


def _number_literal(node: Expr) -> Decimal | None:
    if isinstance(node, Const) and isinstance(node.value, Decimal):
        return node.value
    if (
        isinstance(node, Negate)
        and isinstance(node.operand, Const)
        and isinstance(node.operand.value, Decimal)
    ):
        return -node.operand.value
    return None


_Handler = Callable[[Compiler, Call, bool], Typed]
_SCALARS: dict[str, _Handler] = {
    **dict.fromkeys(("year", "month", "day", "hour", "minute", "second"), Compiler.date_part),
    "date_format": Compiler.date_format,
    "length": Compiler.text_function,
    "lower": Compiler.text_function,
    "upper": Compiler.text_function,
    "now": Compiler.now,
    "distance": Compiler.distance,
    "within_distance": Compiler.within_distance,
    "in_bbox": Compiler.in_bbox,
    "search": Compiler.search,
    "startswith": Compiler.search,
}
