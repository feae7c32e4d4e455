"""The query builder without a database: the portal's limits and messages, refine/exclude,
output columns, default order, exports and the v1 search parameters."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from sinks.opendata._odsql import ODSQLError
from sinks.opendata._query import (
    InvalidParameterError,
    OutputColumn,
    RecordsRequest,
    build_export,
    build_records,
    build_v1_search,
    refine_condition,
)
from tests.sinks.opendata._query_db import DATASET

PARIS = ZoneInfo("Europe/Paris")


def records(**params: object) -> tuple[str, tuple[object, ...]]:
    compiled = build_records(DATASET, RecordsRequest(**params))  # type: ignore[arg-type]
    return compiled.query.as_string(None), compiled.params


def parameter_error(**params: object) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError) as caught:
        build_records(DATASET, RecordsRequest(**params))  # type: ignore[arg-type]
    return caught.value


# --- limits -------------------------------------------------------------------------------


def test_the_default_page_is_ten_rows_from_the_start() -> None:
    text, params = records()
    assert text.endswith("LIMIT (%s::bigint) OFFSET (%s::bigint)")
    assert params[-2:] == (10, 0)


def test_limit_out_of_range_has_the_portals_message() -> None:
    error = parameter_error(limit=200)
    assert error.name == "limit"
    assert str(error) == (
        "Invalid value for limit API parameter: 200 was found but -1 <= limit <= 100 is expected."
    )
    assert parameter_error(limit=-2).name == "limit"


def test_offset_plus_limit_is_capped_at_ten_thousand() -> None:
    error = parameter_error(offset=9950, limit=100)
    assert (
        str(error) == "Invalid value for sum of offset + limit API parameter: 10050 was found "
        "but <= 10000 is expected."
    )
    assert records(offset=9900, limit=100)[1][-2:] == (100, 9900)
    assert parameter_error(offset=-1).name == "offset"


def test_limit_minus_one_is_the_largest_page() -> None:
    assert records(limit=-1)[1][-2:] == (100, 0)
    assert records(limit=-1, group_by="sensor_id")[1][-2:] == (20_000, 0)


def test_group_by_allows_twenty_thousand_groups() -> None:
    assert records(group_by="sensor_id", limit=20_000)[1][-2:] == (20_000, 0)
    assert "20000" in str(parameter_error(group_by="sensor_id", limit=20_001))
    assert "20000" in str(parameter_error(group_by="sensor_id", limit=1000, offset=19_500))


def test_timezone_and_lang_are_checked() -> None:
    assert parameter_error(timezone="Mars/Olympus").name == "timezone"
    assert parameter_error(timezone="../../etc/passwd").name == "timezone"
    assert parameter_error(timezone="Europe/Paris\x00").name == "timezone"
    assert parameter_error(lang="de").name == "lang"
    assert build_records(DATASET, RecordsRequest(timezone="Europe/Paris")).timezone == (
        "Europe/Paris"
    )


# --- columns and order --------------------------------------------------------------------


def test_all_fields_with_their_types_by_default() -> None:
    compiled = build_records(DATASET, RecordsRequest())
    assert compiled.columns == tuple(OutputColumn(f.name, f.type) for f in DATASET.fields)


def test_column_names_are_aliases_fields_or_the_expression_text() -> None:
    compiled = build_records(
        DATASET,
        RecordsRequest(select="sensor_id, laeq_db*2 as double_level, year(start_time)"),
    )
    assert compiled.columns == (
        OutputColumn("sensor_id", "text"),
        OutputColumn("double_level", "double"),
        OutputColumn("year(start_time)", "int"),
    )


def test_a_column_name_used_twice_is_an_error() -> None:
    with pytest.raises(ODSQLError, match="used twice") as caught:
        build_records(DATASET, RecordsRequest(select="sensor_id, laeq_db as sensor_id"))
    assert caught.value.position == 12


def test_grouped_answers_default_to_the_group_keys_and_count_groups() -> None:
    compiled = build_records(
        DATASET, RecordsRequest(group_by="sensor_id, date_format(start_time, 'yyyy') as year")
    )
    assert compiled.columns == (OutputColumn("sensor_id", "text"), OutputColumn("year", "text"))
    assert "GROUP BY" in compiled.count_query.as_string(None)


def test_select_outside_group_by_must_aggregate() -> None:
    with pytest.raises(ODSQLError, match="must be in group_by") as caught:
        build_records(DATASET, RecordsRequest(select="site_name, count(*)", group_by="sensor_id"))
    assert caught.value.clause == "select"
    with pytest.raises(ODSQLError, match="must be in group_by"):
        build_records(DATASET, RecordsRequest(select="site_name, count(*)"))
    with pytest.raises(ODSQLError, match=r"'\*' cannot be used"):
        build_records(DATASET, RecordsRequest(select="*", group_by="sensor_id"))


def test_order_by_takes_select_and_group_aliases() -> None:
    text, _ = records(
        select="count(*) as n", group_by="sensor_id as sensor", order_by="n desc, sensor"
    )
    assert 'ORDER BY count(*) DESC NULLS LAST, "_odsql_group_0" ASC NULLS LAST' in text


def test_select_takes_group_aliases() -> None:
    compiled = build_records(
        DATASET,
        RecordsRequest(select="sensor, count(*)", group_by="upper(sensor_id) as sensor"),
    )
    assert [c.name for c in compiled.columns] == ["sensor", "count(*)"]
    assert compiled.query.as_string(None).startswith('SELECT "_odsql_group_0" AS "c0"')


def test_aggregations_in_order_by_need_group_by() -> None:
    with pytest.raises(ODSQLError, match="needs group_by") as caught:
        build_records(DATASET, RecordsRequest(order_by="count(*)"))
    assert caught.value.clause == "order_by"


def test_the_default_order_is_newest_first_then_the_key_fields() -> None:
    text, _ = records()
    assert 'ORDER BY "start_time" DESC, "sensor_id" ASC NULLS LAST' in text


def test_range_only_in_group_by() -> None:
    with pytest.raises(ODSQLError, match="only allowed in group_by"):
        build_records(DATASET, RecordsRequest(select="range(laeq_db, 5)"))
    with pytest.raises(ODSQLError, match="positive number"):
        build_records(DATASET, RecordsRequest(group_by="range(laeq_db, 0)"))
    with pytest.raises(ODSQLError, match="only 1"):
        build_records(DATASET, RecordsRequest(group_by="range(start_time, 2 months)"))


# --- refine / exclude ---------------------------------------------------------------------


def test_refine_on_a_datetime_is_a_prefix_in_the_request_timezone() -> None:
    fragment = refine_condition(DATASET, 'start_time:"2026/03"', "Europe/Paris")
    assert fragment.params == (
        datetime(2026, 3, 1, tzinfo=PARIS),
        datetime(2026, 4, 1, tzinfo=PARIS),
    )
    fragment = refine_condition(DATASET, "start_time:2026-12-31", "UTC")
    assert fragment.params[1] == datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC"))
    fragment = refine_condition(DATASET, "start_time:2026", "UTC")
    assert fragment.params[1] == datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC"))


def test_refine_on_a_date_field_compares_days() -> None:
    fragment = refine_condition(DATASET, "day:2026/02", "UTC")
    assert fragment.params == (date(2026, 2, 1), date(2026, 3, 1))


def test_refine_on_other_types() -> None:
    assert refine_condition(DATASET, "site_name:Nation: Nord", "UTC").params == ("Nation: Nord",)
    assert refine_condition(DATASET, "sample_count:58", "UTC").params == (Decimal(58),)
    assert refine_condition(DATASET, "ok:TRUE", "UTC").params == (True,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere", "not field:value"),
        ("missing:1", "Unknown field: missing"),
        ("_owner_email:x", "Unknown field: _owner_email"),
        ("sample_count:many", "is a number"),
        ("sample_count:NaN", "is a number"),
        ("ok:yes", "true or false"),
        ("start_time:March", "not a date"),
        ("geo_point_2d:48,2", "cannot refine"),
    ],
)
def test_bad_refines_are_odsql_errors(spec: str, message: str) -> None:
    with pytest.raises(ODSQLError, match=message) as caught:
        build_records(DATASET, RecordsRequest(refine=(spec,)))
    assert caught.value.clause == "refine"


def test_exclude_keeps_rows_where_the_field_is_null() -> None:
    text, params = records(exclude=("sensor_id:s1",))
    assert 'NOT coalesce(("sensor_id" = (%s::text)), FALSE)' in text
    assert params[0] == "s1"


# --- exports ------------------------------------------------------------------------------


def test_exports_have_no_limit_unless_asked() -> None:
    compiled = build_export(DATASET, RecordsRequest(limit=-1))
    assert "LIMIT" not in compiled.query.as_string(None)
    compiled = build_export(DATASET, RecordsRequest(limit=50_000, where="ok"))
    assert compiled.query.as_string(None).endswith("LIMIT (%s::bigint)")
    assert compiled.params == (50_000,)
    with pytest.raises(InvalidParameterError):
        build_export(DATASET, RecordsRequest(limit=-5))


def test_exports_take_group_by() -> None:
    compiled = build_export(
        DATASET, RecordsRequest(select="sensor_id, count(*) as n", group_by="sensor_id", limit=-1)
    )
    assert [c.name for c in compiled.columns] == ["sensor_id", "n"]


# --- v1 search ----------------------------------------------------------------------------


def test_v1_sort_is_descending_and_a_minus_sign_makes_it_ascending() -> None:
    text = build_v1_search(DATASET, sort="laeq_db").query.as_string(None)
    assert 'ORDER BY "laeq_db" DESC NULLS LAST' in text
    text = build_v1_search(DATASET, sort="-laeq_db, sensor_id").query.as_string(None)
    assert 'ORDER BY "laeq_db" ASC NULLS LAST, "sensor_id" DESC NULLS LAST' in text


def test_v1_rows_start_and_names_are_checked() -> None:
    assert build_v1_search(DATASET).params[-2:] == (10, 0)
    with pytest.raises(InvalidParameterError) as caught:
        build_v1_search(DATASET, rows=1001)
    assert caught.value.name == "rows"
    with pytest.raises(InvalidParameterError):
        build_v1_search(DATASET, rows=1000, start=9500)
    with pytest.raises(InvalidParameterError, match="unknown field"):
        build_v1_search(DATASET, sort="-nope")
    with pytest.raises(InvalidParameterError, match="unknown field"):
        build_v1_search(DATASET, facets=["_owner_email"])
    with pytest.raises(InvalidParameterError, match="cannot facet"):
        build_v1_search(DATASET, facets=["geo_point_2d"])


def test_v1_refines_of_one_field_are_alternatives_and_facets_follow_the_filters() -> None:
    compiled = build_v1_search(
        DATASET,
        q="nation",
        refine={"sensor_id": ["s1", "s2"]},
        exclude={"ok": ["false"]},
        facets=["site_name", "start_time"],
    )
    assert " OR " in compiled.count_query.as_string(None)
    assert [f.field for f in compiled.facets] == ["site_name", "start_time"]
    assert [f.value_type for f in compiled.facets] == ["text", "text"]
    for facet in compiled.facets:
        assert set(compiled.count_params) <= set(facet.params)
