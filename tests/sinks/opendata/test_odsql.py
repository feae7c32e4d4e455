"""The ODSQL grammar and compiler without a database: trees, SQL text, parameters, errors."""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from sinks.opendata._odsql import (
    MAX_CLAUSE_LENGTH,
    BoolOp,
    Call,
    Compare,
    Const,
    FieldRef,
    Not,
    ODSQLError,
    Quantity,
    Star,
    parse_group_by,
    parse_order_by,
    parse_select,
    parse_where,
)
from sinks.opendata._odsql_compile import (
    Compiler,
    Fragment,
    like_pattern,
    parse_date_text,
    to_char_template,
)
from tests.sinks.opendata._query_db import DATASET


def where_sql(text: str, timezone: str = "UTC") -> Fragment:
    return Compiler(DATASET, timezone, "where").condition(parse_where(text))


def as_text(fragment: Fragment) -> str:
    assert isinstance(fragment.sql, sql.Composable)
    return fragment.sql.as_string(None)


def error_of(text: str) -> ODSQLError:
    with pytest.raises(ODSQLError) as caught:
        where_sql(text)
    return caught.value


# --- grammar ------------------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_not_tighter_than_and() -> None:
    tree = parse_where("a or b and not c")
    assert tree == BoolOp("or", (FieldRef("a"), BoolOp("and", (FieldRef("b"), Not(FieldRef("c"))))))
    assert parse_where("(a or b) and c") == BoolOp(
        "and", (BoolOp("or", (FieldRef("a"), FieldRef("b"))), FieldRef("c"))
    )


def test_keywords_are_case_insensitive_and_backquotes_name_any_field() -> None:
    assert parse_where("`and` = 1 AND `12` IS NOT NULL") == parse_where(
        "`and` = 1 and `12` is not null"
    )
    tree = parse_where("`and` = 1")
    assert isinstance(tree, Compare)
    assert tree.left == FieldRef("and")


def test_function_names_are_not_reserved_so_count_and_date_are_field_names() -> None:
    assert parse_where("count > 3") == Compare(">", FieldRef("count"), Const(Decimal(3)))
    assert parse_where("date = date'2026-01-01'").left == FieldRef("date")  # type: ignore[union-attr]


def test_strings_take_either_quote_and_backslash_escapes() -> None:
    assert parse_where(r'x = "say \"hi\""').right == Const('say "hi"')  # type: ignore[union-attr]
    assert parse_where(r"x = 'it\'s'").right == Const("it's")  # type: ignore[union-attr]


def test_colon_is_equality_and_angle_brackets_are_inequality() -> None:
    assert parse_where("x: 1").op == "="  # type: ignore[union-attr]
    assert parse_where("x <> 1").op == "!="  # type: ignore[union-attr]


def test_function_arguments_take_star_and_quantities() -> None:
    select = parse_select("count(*) as n")
    assert select[0].expr == Call("count", (Star(),))
    assert select[0].alias == "n"
    groups = parse_group_by("range(start_time, 1 day), range(start_time, 6h)")
    assert groups[0].expr.args[1] == Quantity(Decimal(1), "day")  # type: ignore[union-attr]
    assert groups[1].expr.args[1] == Quantity(Decimal(6), "h")  # type: ignore[union-attr]


def test_select_names_keep_the_expression_as_written() -> None:
    items = parse_select("*, avg(laeq_db)  ,  laeq_db * 2 as double_level")
    assert [(i.text, i.alias) for i in items] == [
        ("*", None),
        ("avg(laeq_db)", None),
        ("laeq_db * 2", "double_level"),
    ]


def test_order_by_directions_default_to_ascending() -> None:
    items = parse_order_by("a DESC, b asc, c")
    assert [i.descending for i in items] == [True, False, False]


# --- syntax errors ------------------------------------------------------------------------


def test_a_missing_value_is_reported_at_the_end_with_what_was_expected() -> None:
    error = error_of("laeq_db > ")
    assert error.clause == "where"
    assert error.position == len("laeq_db >") + 1
    assert "end of the clause" in error.message
    assert "a number" in error.message
    assert "a field name" in error.message


def test_an_unexpected_token_is_reported_at_its_column() -> None:
    error = error_of("laeq_db == 1")
    assert error.position == 10
    assert "'='" in error.message
    assert "Clause(s) containing the error(s): where." in str(error)


def test_an_unknown_character_is_reported_at_its_column() -> None:
    error = error_of("laeq_db > 1 ; drop table sensors")
    assert error.position == 13
    assert "';'" in error.message


def test_a_dotted_name_such_as_another_schemas_table_is_a_syntax_error() -> None:
    error = error_of("pg_catalog.pg_user = 1")
    assert error.position == 11


@pytest.mark.parametrize(
    "text",
    [
        "not " * 5000 + "ok",
        "lower(" * 3000 + "site_name" + ")" * 3000,
        "(ok and " * 200 + "ok" + ")" * 200,
        "laeq_db = " + "-" * 3000 + "1",
    ],
)
def test_deep_nesting_is_an_odsql_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(ODSQLError):
        where_sql(text)


def test_redundant_parentheses_add_no_depth() -> None:
    assert parse_where("(" * 4000 + "ok" + ")" * 4000) == FieldRef("ok")


def test_long_flat_conditions_are_fine() -> None:
    text = " or ".join(f"sensor_id = 's{i}'" for i in range(300))
    fragment = where_sql(text)
    assert len(fragment.params) == 300


def test_too_long_a_clause_and_nul_characters_are_refused() -> None:
    error = error_of("ok or " * (MAX_CLAUSE_LENGTH // 6) + "ok" * 10)
    assert "longer than" in error.message
    error = error_of("site_name = 'a\x00b'")
    assert error.position == 15


def test_numbers_beyond_the_double_range_are_refused() -> None:
    assert "out of range" in error_of("laeq_db > 1" + "0" * 400).message


def test_too_many_arithmetic_operators_are_refused() -> None:
    assert "arithmetic operators" in error_of("laeq_db > " + " + ".join(["1"] * 150)).message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_is_an_odsql_error(text: str) -> None:
    for parse in (parse_where, parse_select, parse_group_by, parse_order_by):
        with contextlib.suppress(ODSQLError):
            parse(text)


# --- compiling: values become parameters, names become identifiers ----------------------


def test_an_injection_attempt_stays_a_parameter() -> None:
    attack = "x'; DROP TABLE sensors; --"
    fragment = where_sql(f'site_name = "{attack}" or sensor_id like "pg_sleep(10)"')
    text = as_text(fragment)
    assert "DROP" not in text
    assert "pg_sleep" not in text
    assert attack in fragment.params
    assert "%pg\\_sleep(10)%" in fragment.params


def test_field_names_are_quoted_identifiers_and_unknown_or_hidden_ones_are_refused() -> None:
    assert '"laeq_db"' in as_text(where_sql("laeq_db > 3"))
    assert error_of("_owner_email = 'a'").message == "Unknown field: _owner_email"
    assert error_of("`owner email` = 'a'").message == "Unknown field: owner email"
    error = error_of("ok and nope > 1")
    assert error.position == 8


def test_comparisons_check_types() -> None:
    assert "cannot compare text with numeric" in error_of("site_name > 5").message
    assert "cannot compare int with boolean" in error_of("sample_count = true").message
    assert "is not a date" in error_of("start_time > 'yesterday'").message
    assert "use 'is null'" in error_of("laeq_db = null").message
    assert "'like' needs a text field" in error_of("laeq_db like '5'").message
    assert "geo_point_2d" in error_of("geo_point_2d = 1").message


def test_a_date_next_to_a_datetime_is_read_in_the_request_timezone() -> None:
    fragment = where_sql("start_time >= '2026-03-29'", timezone="Europe/Paris")
    assert fragment.params == (datetime(2026, 3, 29, tzinfo=ZoneInfo("Europe/Paris")),)
    fragment = where_sql("start_time < date'2026/03/29T02:30Z'", timezone="Europe/Paris")
    (moment,) = fragment.params
    assert moment.utcoffset() == timedelta(0)
    assert moment.hour == 2


def test_a_date_only_literal_against_a_date_field_compares_days() -> None:
    fragment = where_sql("day = date'2026-03-29'")
    assert fragment.params == (date(2026, 3, 29),)


def test_aggregates_are_refused_in_where() -> None:
    assert "only allowed in select" in error_of("count(*) > 1").message


def test_bare_strings_are_full_text_search_over_text_fields() -> None:
    fragment = where_sql('"nation nord"')
    text = as_text(fragment)
    assert text.count("ILIKE") == 4  # two words x two text fields
    assert fragment.params == ("%nation%", "%nation%", "%nord%", "%nord%")


def test_search_on_named_fields_and_startswith() -> None:
    fragment = where_sql('search(site_name, "nord*")')
    assert fragment.params == ("%nord%",)
    fragment = where_sql('startswith(site_name, "nor")')
    assert fragment.params == ("nor%", "% nor%")
    assert "text fields only" in error_of('search(laeq_db, "x")').message


def test_now_takes_whole_shifts_within_a_thousand_years() -> None:
    fragment = where_sql("start_time > now(days=-1, hours=2)")
    assert "make_interval(days => (%s::int), hours => (%s::int))" in as_text(fragment)
    assert fragment.params == (-1, 2)
    assert "whole-number shifts" in error_of("start_time > now(days=1.5)").message
    assert "whole-number shifts" in error_of("start_time > now(fortnights=1)").message
    assert "1000 years" in error_of("start_time > now(years=-5000)").message


def test_within_distance_units_and_point_checks() -> None:
    fragment = where_sql("within_distance(geo_point_2d, geom'POINT(2.39 48.85)', 1.5km)")
    assert fragment.params[-1] == 1500.0
    assert "asin(least(1::float8" in as_text(fragment)
    assert (
        "unknown distance unit"
        in error_of("within_distance(geo_point_2d, geom'POINT(2 48)', 5parsec)").message
    )
    assert (
        "-90 <= lat <= 90"
        in error_of("within_distance(geo_point_2d, geom'POINT(2 91)', 5m)").message
    )
    geojson = where_sql(
        'within_distance(geo_point_2d, geom\'{"type": "Point", "coordinates": [2.39, 48.85]}\', 5m)'
    )
    assert 48.85 in geojson.params
    assert 2.39 in geojson.params


def test_division_by_zero_gives_null_instead_of_an_error() -> None:
    assert "NULLIF" in as_text(where_sql("laeq_db / 0 > 1"))


# --- literal helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_day"),
    [
        ("2026", date(2026, 1, 1)),
        ("2026-03", date(2026, 3, 1)),
        ("2026/03/29", date(2026, 3, 29)),
        ("2026-3-9", date(2026, 3, 9)),
    ],
)
def test_date_only_literals(text: str, expected_day: date) -> None:
    moment, day = parse_date_text(text, "Europe/Paris")
    assert day == expected_day
    assert moment == datetime(
        expected_day.year, expected_day.month, expected_day.day, tzinfo=ZoneInfo("Europe/Paris")
    )


@pytest.mark.parametrize("text", ["2026-13", "2026-02-30", "tomorrow", "0000", "2026-01-01T25:00"])
def test_impossible_dates_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a date"):
        parse_date_text(text, "UTC")


def test_like_patterns_take_star_as_wildcard_and_escape_underscore() -> None:
    assert like_pattern("a*b_c\\") == "%a%b\\_c\\\\%"
    assert like_pattern("50%") == "%50%%"


@pytest.mark.parametrize(
    ("pattern", "template"),
    [
        ("yyyy-MM-dd'T'HH", 'YYYY-MM-DD"T"HH24'),
        ("dd/MM/YYYY", "DD/MM/YYYY"),
        ("'The date is '''dd/MM/YYYY''", '"The date is \'"DD/MM/YYYY"\'"'),
        ("H:mm", "FMHH24:MI"),
        ("'say \"x\"'", '"say \\"x\\""'),
        ("EEEE w", "FMDay FMIW"),
    ],
)
def test_date_format_patterns_map_to_to_char(pattern: str, template: str) -> None:
    assert to_char_template(pattern) == template


@pytest.mark.parametrize("pattern", ["yyyy-QQ", "'open", "HH;mm", "zzz"])
def test_unknown_date_format_letters_are_errors(pattern: str) -> None:
    with pytest.raises(ValueError, match="date format"):
        to_char_template(pattern)
