"""The ODSQL subset the publication API accepts: grammar, parser and syntax tree.

ODSQL is OpenDataSoft's query language (Explore API v2.1, section "ODSQL": select, where,
group_by and order_by clauses; https://help.opendatasoft.com/apis/ods-explore-v2/). This module
turns one clause's text into a small typed tree; :mod:`sinks.opendata._odsql_compile` turns the
tree into parameterised SQL over a dataset's view. Nothing here touches the database.

What the grammar takes, as the portal writes it:

- literals: numbers (``12``, ``5.8``), strings in single or double quotes (backslash escapes),
  ``true``/``false``/``null``, dates ``date'2026-01-01'`` (ISO 8601 or ``YYYY/MM/DD``), points
  ``geom'POINT(2.35 48.85)'`` (WKT or GeoJSON, longitude first);
- field names, or any name between back-quotes (a keyword, a name made of digits);
- arithmetic ``+ - * /``, comparisons ``= != <> < <= > >=`` and ``:`` (equality), ``and``,
  ``or``, ``not`` (precedence not > and > or), ``in (…)``, ``like``, ``is [not] null``,
  ``is true|false``, a bare string (full-text search), function calls ``name(args)``;
- function arguments may also be ``*`` (``count(*)``) or a quantity ``500m``, ``1km``,
  ``1 day`` (``within_distance``, ``range``).

Keywords are case-insensitive and reserved (a field with that name needs back-quotes): and, or,
not, in, is, like, as, asc, desc, null, true, false. Function names are not reserved, so a field
named ``count`` or ``date`` works unquoted.

Bad input raises :class:`ODSQLError` naming the clause, the 1-based column and what was
expected, never a Lark exception. Input is bounded before parsing (:data:`MAX_CLAUSE_LENGTH`
characters) and after (:data:`MAX_DEPTH` levels of nesting, :data:`MAX_OPERATORS` arithmetic
operators), so a hostile clause cannot exhaust the recursion limit or build numbers beyond
PostgreSQL's ``numeric`` range.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Literal

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

__all__ = [
    "MAX_CLAUSE_LENGTH",
    "MAX_DEPTH",
    "MAX_OPERATORS",
    "Arith",
    "BoolOp",
    "Call",
    "Compare",
    "Const",
    "DateLiteral",
    "Expr",
    "FieldRef",
    "GeomLiteral",
    "GroupItem",
    "InList",
    "IsBool",
    "IsNull",
    "Like",
    "Negate",
    "Not",
    "ODSQLError",
    "OrderItem",
    "Quantity",
    "SelectItem",
    "Star",
    "check_text",
    "parse_group_by",
    "parse_order_by",
    "parse_select",
    "parse_where",
]

#: Longest clause text accepted (the portal's URLs stay far below; the parser is linear anyway).
MAX_CLAUSE_LENGTH = 10_000
#: Deepest syntax tree accepted: parentheses, ``not`` and calls each add a level.
MAX_DEPTH = 40
#: Most arithmetic operators in one clause: keeps any computed number within PostgreSQL's
#: ``numeric`` range (100 products of values below 1e308 stay below 10^31000 < 10^131072).
MAX_OPERATORS = 100
#: Largest decimal exponent of a number literal: it stays a finite, non-zero double.
_MAX_EXPONENT = 300


class ODSQLError(ValueError):
    """A clause the grammar or the dataset refuses; the API answers 400 ``ODSQLError``.

    ``position`` is the 1-based column in the clause's text, None when the error is not at one
    place (an unknown timezone for a date, a clause too long).
    """

    def __init__(self, clause: str, position: int | None, message: str) -> None:
        self.clause = clause
        self.position = position
        self.message = message
        where = f" at column {position}" if position is not None else ""
        super().__init__(
            f"ODSQL query is malformed: {message}{where}. "
            f"Clause(s) containing the error(s): {clause}."
        )


# --- grammar -------------------------------------------------------------------------------

_GRAMMAR = r"""
start_select: select_item ("," select_item)*
start_where: expr
start_group_by: group_item ("," group_item)*
start_order_by: order_item ("," order_item)*

select_item: STAR -> select_all
           | expr [_AS alias] -> select_expr
group_item: expr [_AS alias]
order_item: expr [ASC | DESC]
alias: NAME | QUOTED_NAME

?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> not_
         | predicate
?predicate: sum COMPARATOR sum -> compare
          | sum _IS NULL -> is_null
          | sum _IS _NOT NULL -> is_not_null
          | sum _IS TRUE -> is_true
          | sum _IS FALSE -> is_false
          | sum _IN "(" expr ("," expr)* ")" -> in_list
          | sum _NOT _IN "(" expr ("," expr)* ")" -> not_in_list
          | sum _LIKE sum -> like
          | sum _NOT _LIKE sum -> not_like
          | sum
?sum: product ((PLUS | MINUS) product)*
?product: unary ((STAR | SLASH) unary)*
?unary: MINUS unary -> neg
      | atom
?atom: NUMBER -> number
     | STRING -> string
     | DATE_LIT -> date_lit
     | GEOM_LIT -> geom_lit
     | TRUE -> true
     | FALSE -> false
     | NULL -> null
     | NAME "(" [arg ("," arg)*] ")" -> call
     | NAME -> field
     | QUOTED_NAME -> field
     | "(" expr ")"
?arg: expr
    | STAR -> star
    | QUANTITY -> quantity
    | NUMBER NAME -> quantity

_AND: "and"i
_OR: "or"i
_NOT: "not"i
_IN: "in"i
_IS: "is"i
_LIKE: "like"i
_AS: "as"i
ASC: "asc"i
DESC: "desc"i
NULL: "null"i
TRUE: "true"i
FALSE: "false"i
NAME: /[a-z_][a-z0-9_]*/i
QUOTED_NAME: /`[^`]+`/
NUMBER: /\d+(\.\d*)?|\.\d+/
QUANTITY.2: /\d+(\.\d+)?[a-z]+/i
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
DATE_LIT.2: /date'[^']*'/i
GEOM_LIT.2: /geom'[^']*'/i
COMPARATOR: /!=|<>|<=|>=|=|<|>|:/
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
%import common.WS
%ignore WS
"""

#: How a terminal is named in an error message.
_TERMINAL_NAMES = {
    "NAME": "a field name",
    "QUOTED_NAME": "a `quoted` field name",
    "NUMBER": "a number",
    "STRING": "a string",
    "DATE_LIT": "a date (date'2026-01-01')",
    "GEOM_LIT": "a geometry (geom'POINT(lon lat)')",
    "QUANTITY": "a quantity (500m, 1 day)",
    "COMPARATOR": "a comparison (=, !=, <, <=, >, >=)",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "_AND": "and",
    "_OR": "or",
    "_NOT": "not",
    "_IN": "in",
    "_IS": "is",
    "_LIKE": "like",
    "_AS": "as",
    "ASC": "asc",
    "DESC": "desc",
    "NULL": "null",
    "TRUE": "true",
    "FALSE": "false",
    "$END": "the end of the clause",
}


@cache
def _parser() -> Lark:
    return Lark(
        _GRAMMAR,
        parser="lalr",
        start=["start_select", "start_where", "start_group_by", "start_order_by"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


# --- syntax tree ---------------------------------------------------------------------------
# Nodes compare equal when they mean the same thing wherever they were written (``pos`` is left
# out of equality), so a select expression can be matched against a group_by expression.


@dataclass(frozen=True, slots=True)
class FieldRef:
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Const:
    """A number (Decimal), string, boolean or null literal."""

    value: Decimal | str | bool | None
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class DateLiteral:
    """``date'…'``: the text stays as written; its instant depends on the request's timezone."""

    text: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class GeomLiteral:
    lon: float
    lat: float
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with a unit: ``500m`` or ``1 day``; the unit's meaning depends on the function."""

    value: Decimal
    unit: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Star:
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # lower case
    args: tuple[Expr, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Arith:
    """``operands[0] ops[0] operands[1] ops[1] …`` with the usual precedence already applied."""

    operands: tuple[Expr, ...]
    ops: tuple[str, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # one of = != < <= > >= (``:`` and ``<>`` normalised)
    left: Expr
    right: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: Literal["and", "or"]
    operands: tuple[Expr, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Expr
    negated: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class IsBool:
    operand: Expr
    value: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class InList:
    operand: Expr
    items: tuple[Expr, ...]
    negated: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Like:
    operand: Expr
    pattern: Expr
    negated: bool
    pos: int = field(default=0, compare=False)


Expr = (
    FieldRef
    | Const
    | DateLiteral
    | GeomLiteral
    | Quantity
    | Star
    | Call
    | Negate
    | Arith
    | Compare
    | BoolOp
    | Not
    | IsNull
    | IsBool
    | InList
    | Like
)


@dataclass(frozen=True, slots=True)
class SelectItem:
    """One select expression; ``expr`` None is ``*``. ``text`` is the expression as written,
    the output column's name when there is no alias (as the portal names it)."""

    expr: Expr | None
    alias: str | None
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class GroupItem:
    expr: Expr
    alias: str | None
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class OrderItem:
    expr: Expr
    descending: bool
    pos: int


# --- parsing -------------------------------------------------------------------------------


def check_text(clause: str, text: str) -> None:
    """Refuse text no clause may hold: too long, or with a NUL (PostgreSQL text cannot)."""
    if len(text) > MAX_CLAUSE_LENGTH:
        raise ODSQLError(clause, None, f"the clause is longer than {MAX_CLAUSE_LENGTH} characters")
    nul = text.find("\x00")
    if nul >= 0:
        raise ODSQLError(clause, nul + 1, "a NUL character is not allowed")


def parse_select(text: str) -> tuple[SelectItem, ...]:
    tree = _parse("select", text, "start_select")
    items: list[SelectItem] = []
    for child in _trees(tree):
        pos = _pos(child)
        if child.data == "select_all":
            items.append(SelectItem(None, None, "*", pos))
            continue
        expr_node, alias = child.children
        items.append(
            SelectItem(
                _Builder("select", text).expr(expr_node),
                _alias(alias),
                _span(text, expr_node),
                pos,
            )
        )
    return tuple(items)


def parse_where(text: str) -> Expr:
    tree = _parse("where", text, "start_where")
    return _Builder("where", text).expr(tree.children[0])


def parse_group_by(text: str) -> tuple[GroupItem, ...]:
    tree = _parse("group_by", text, "start_group_by")
    items = []
    builder = _Builder("group_by", text)
    for child in _trees(tree):
        expr_node, alias = child.children
        items.append(
            GroupItem(builder.expr(expr_node), _alias(alias), _span(text, expr_node), _pos(child))
        )
    return tuple(items)


def parse_order_by(text: str) -> tuple[OrderItem, ...]:
    tree = _parse("order_by", text, "start_order_by")
    items = []
    builder = _Builder("order_by", text)
    for child in _trees(tree):
        expr_node, direction = child.children
        descending = isinstance(direction, Token) and direction.type == "DESC"
        items.append(OrderItem(builder.expr(expr_node), descending, _pos(child)))
    return tuple(items)


def _parse(clause: str, text: str, start: str) -> Tree[Token]:
    check_text(clause, text)
    if not text.strip():
        raise ODSQLError(clause, 1, "the clause is empty")
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedInput as exc:
        raise _syntax_error(clause, text, exc) from None
    except LarkError as exc:  # anything else Lark may raise is still the input's fault
        raise ODSQLError(clause, None, f"cannot parse the clause ({type(exc).__name__})") from None
    _check_size(clause, tree)
    return tree


def _syntax_error(clause: str, text: str, exc: UnexpectedInput) -> ODSQLError:
    if isinstance(exc, UnexpectedToken):
        expected = exc.expected
        token = exc.token
        if token.type == "$END":
            return ODSQLError(
                clause,
                len(text.rstrip()) + 1,
                f"unexpected end of the clause; expected {_expected(clause, expected)}",
            )
        position = (token.start_pos or 0) + 1
        return ODSQLError(
            clause,
            position,
            f"unexpected {_quote(str(token))}; expected {_expected(clause, expected)}",
        )
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        return ODSQLError(
            clause,
            offset + 1,
            f"unexpected character {_quote(text[offset : offset + 1])}; "
            f"expected {_expected(clause, exc.allowed or set())}",
        )
    return ODSQLError(clause, None, "the clause is incomplete")


#: Terminals another clause's rules let the shared LALR tables expect; never offered here.
_NOT_IN_CLAUSE = {
    "select": {"ASC", "DESC"},
    "where": {"_AS", "ASC", "DESC"},
    "group_by": {"ASC", "DESC"},
    "order_by": {"_AS"},
}


def _expected(clause: str, terminals: set[str]) -> str:
    shown = set(terminals) - _NOT_IN_CLAUSE.get(clause, set())
    names = sorted({_TERMINAL_NAMES.get(t, t.lower()) for t in shown})
    if not names:
        return "nothing more"
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


def _quote(value: str) -> str:
    shown = value if len(value) <= 30 else value[:27] + "..."
    return repr(shown)


def _check_size(clause: str, tree: Tree[Token]) -> None:
    """Depth and operator count, measured without recursion (the tree may be hostile)."""
    operators = 0
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ODSQLError(clause, _pos(node), f"expressions nested deeper than {MAX_DEPTH}")
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth + 1))
            elif isinstance(child, Token) and node.data in _ARITHMETIC and child.type in _OPERATORS:
                operators += 1
                if operators > MAX_OPERATORS:
                    raise ODSQLError(
                        clause,
                        _pos(child),
                        f"more than {MAX_OPERATORS} arithmetic operators",
                    )


_ARITHMETIC = frozenset({"sum", "product", "neg"})
_OPERATORS = frozenset({"PLUS", "MINUS", "STAR", "SLASH"})


def _trees(tree: Tree[Token]) -> list[Tree[Token]]:
    return [c for c in tree.children if isinstance(c, Tree)]


def _pos(node: Tree[Token] | Token) -> int:
    if isinstance(node, Token):
        return (node.start_pos or 0) + 1
    meta = node.meta
    return (meta.start_pos + 1) if not meta.empty else 1


def _span(text: str, node: Tree[Token] | Token) -> str:
    if isinstance(node, Token):
        start, end = node.start_pos, node.end_pos
    else:
        start, end = node.meta.start_pos, node.meta.end_pos
    return text[start or 0 : end].strip()


def _alias(node: Tree[Token] | Token | None) -> str | None:
    if not isinstance(node, Tree):
        return None
    token = node.children[0]
    assert isinstance(token, Token)
    return _name(token)


def _name(token: Token) -> str:
    value = str(token)
    return value[1:-1] if token.type == "QUOTED_NAME" else value


_COMPARATORS = {":": "=", "<>": "!="}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


class _Builder:
    """Lark tree → syntax tree. Recursive, which is safe once _check_size bounded the depth."""

    def __init__(self, clause: str, text: str) -> None:
        self.clause = clause
        self.text = text

    def error(self, node: Tree[Token] | Token, message: str) -> ODSQLError:
        return ODSQLError(self.clause, _pos(node), message)

    def expr(self, node: Tree[Token] | Token) -> Expr:
        if isinstance(node, Token):
            return self.token(node)
        pos = _pos(node)
        kind = node.data
        children = node.children
        if kind == "or_expr":
            return BoolOp("or", tuple(self.expr(c) for c in children if c is not None), pos)
        if kind == "and_expr":
            return BoolOp("and", tuple(self.expr(c) for c in children if c is not None), pos)
        if kind == "not_":
            return Not(self.expr(children[0]), pos)
        if kind == "compare":
            left, op, right = children
            assert isinstance(op, Token)
            return Compare(
                _COMPARATORS.get(str(op), str(op)), self.expr(left), self.expr(right), pos
            )
        if kind in ("is_null", "is_not_null"):
            return IsNull(self.expr(children[0]), kind == "is_not_null", pos)
        if kind in ("is_true", "is_false"):
            return IsBool(self.expr(children[0]), kind == "is_true", pos)
        if kind in ("in_list", "not_in_list"):
            operand, *items = children
            return InList(
                self.expr(operand), tuple(self.expr(i) for i in items), kind == "not_in_list", pos
            )
        if kind in ("like", "not_like"):
            return Like(self.expr(children[0]), self.expr(children[1]), kind == "not_like", pos)
        if kind in ("sum", "product"):
            operands = tuple(self.expr(c) for c in children[0::2])
            ops = tuple(str(c) for c in children[1::2])
            return Arith(operands, ops, pos)
        if kind == "neg":
            return Negate(self.expr(children[1]), pos)
        if kind == "call":
            name_token, *args = children
            assert isinstance(name_token, Token)
            return Call(
                str(name_token).lower(), tuple(self.expr(a) for a in args if a is not None), pos
            )
        if kind == "quantity":
            return self.quantity(node)
        if kind in ("number", "string", "date_lit", "geom_lit", "true", "false", "null", "field"):
            token = children[0]
            assert isinstance(token, Token)
            return self.token(token, kind)
        if kind == "star":
            return Star(pos)
        raise self.error(node, f"unsupported expression {kind!r}")  # pragma: no cover

    def token(self, token: Token, kind: str | None = None) -> Expr:
        pos = _pos(token)
        kind = kind or {
            "NUMBER": "number",
            "STRING": "string",
            "DATE_LIT": "date_lit",
            "GEOM_LIT": "geom_lit",
            "TRUE": "true",
            "FALSE": "false",
            "NULL": "null",
            "NAME": "field",
            "QUOTED_NAME": "field",
            "STAR": "star",
            "QUANTITY": "quantity",
        }.get(token.type, token.type)
        value = str(token)
        if kind == "number":
            return Const(self.number(token, value), pos)
        if kind == "string":
            return Const(_ESCAPE.sub(r"\1", value[1:-1]), pos)
        if kind == "true":
            return Const(True, pos)
        if kind == "false":
            return Const(False, pos)
        if kind == "null":
            return Const(None, pos)
        if kind == "field":
            return FieldRef(_name(token), pos)
        if kind == "date_lit":
            return DateLiteral(value[5:-1].strip(), pos)
        if kind == "geom_lit":
            lon, lat = self.point(token, value[5:-1])
            return GeomLiteral(lon, lat, pos)
        if kind == "star":
            return Star(pos)
        if kind == "quantity":
            match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]+)", value)
            assert match is not None
            return Quantity(self.number(token, match.group(1)), match.group(2), pos)
        raise self.error(token, f"unexpected {value!r}")  # pragma: no cover

    def quantity(self, node: Tree[Token]) -> Expr:
        if len(node.children) == 1:  # QUANTITY: number and unit written together
            token = node.children[0]
            assert isinstance(token, Token)
            return self.token(token, "quantity")
        number, unit = node.children
        assert isinstance(number, Token)
        assert isinstance(unit, Token)
        return Quantity(self.number(number, str(number)), str(unit), _pos(node))

    def number(self, token: Token, text: str) -> Decimal:
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the terminal only matches decimals
            raise self.error(token, f"{text!r} is not a number") from None
        if value and abs(value.adjusted()) > _MAX_EXPONENT:
            raise self.error(token, f"number {_quote(text)} is out of range (1e-300 to 1e300)")
        return value

    def point(self, token: Token, body: str) -> tuple[float, float]:
        """A point from WKT ``POINT(lon lat)`` or a GeoJSON Point (RFC 7946 section 3.1.2)."""
        wkt = re.fullmatch(
            r"\s*point\s*\(\s*(-?\d+(?:\.\d+)?)\s+(-?\d+(?:\.\d+)?)\s*\)\s*", body, re.IGNORECASE
        )
        if wkt:
            lon, lat = float(wkt.group(1)), float(wkt.group(2))
        else:
            try:
                geometry = json.loads(body)
                if not isinstance(geometry, dict) or geometry.get("type") != "Point":
                    raise ValueError("not a Point")
                lon, lat = (float(c) for c in geometry["coordinates"][:2])
            except (ValueError, TypeError, KeyError, IndexError, RecursionError):
                raise self.error(
                    token, "only points are supported: geom'POINT(lon lat)' or a GeoJSON Point"
                ) from None
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise self.error(token, "a point needs -180 <= lon <= 180 and -90 <= lat <= 90")
        return lon, lat
