"""Every dashboard query and alert expression runs against the real services without error.

PromQL goes to the test stack's Prometheus (which loaded deploy/prometheus/rules/ itself); SQL
runs against a freshly migrated TimescaleDB as the read-only role Grafana uses, on a few rows
written here so that the JSON paths and casts are exercised, not only parsed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from citysense.ops.dashboards import expand_sql_macros, load, panels, render_dashboards
from citysense.settings import Settings
from citysense.stack import Stack
from citysense.stack._prometheus import STAGE_PORTS
from sinks.timescale._migrations import migrate
from tests.sinks._helpers import fresh_database, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "citysense.rules.yml"


def prometheus_get(stack: Stack, path: str, **params: str) -> Any:
    url = stack.env()["CITYSENSE_PROMETHEUS_URL"] + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def promql_queries() -> list[tuple[str, str]]:
    found = [
        (f"{name}: {panel['title']}", target["expr"])
        for name in render_dashboards()
        for panel in panels(load(name))
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    rules = yaml.safe_load(RULES.read_text())
    found += [
        (f"rule {rule.get('alert')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]
    return found


def sql_queries() -> list[tuple[str, str]]:
    return [
        (f"{name}: {panel['title']}", target["rawSql"])
        for name in render_dashboards()
        for panel in panels(load(name))
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def test_the_query_lists_are_not_empty() -> None:
    assert len(promql_queries()) > 30
    assert len(sql_queries()) >= 7


async def test_every_promql_query_runs(stack: Stack) -> None:
    end = datetime.now(UTC)
    errors = {}
    for where, expr in promql_queries():
        # Grafana substitutes $__rate_interval (at least four scrape intervals) before sending.
        query = expr.replace("$__rate_interval", "1m")
        answer = prometheus_get(
            stack,
            "/api/v1/query_range",
            query=query,
            start=str((end - timedelta(hours=1)).timestamp()),
            end=str(end.timestamp()),
            step="60",
        )
        if answer.get("status") != "success":
            errors[where] = answer.get("error")
    assert errors == {}


async def test_prometheus_rejects_a_broken_query(stack: Stack) -> None:
    """The check above can fail."""
    answer = prometheus_get(stack, "/api/v1/query", query="sum by (kind (x)")
    assert answer["status"] == "error"


async def test_the_stack_prometheus_loaded_the_rules_and_scrapes_every_stage(stack: Stack) -> None:
    expected = {g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]}
    rules = prometheus_get(stack, "/api/v1/rules")["data"]["groups"]
    assert {g["name"] for g in rules} == expected

    async def evaluated() -> bool:
        groups = prometheus_get(stack, "/api/v1/rules")["data"]["groups"]
        return all(r["health"] == "ok" for g in groups for r in g["rules"])

    # Every rule evaluated at least once without error (evaluation interval 15 s).
    await wait_until(evaluated, 60, "every rule evaluated healthy")
    targets = prometheus_get(stack, "/api/v1/targets")["data"]["activeTargets"]
    stages = {t["labels"]["stage"]: t["labels"]["instance"] for t in targets}
    assert stages == {stage: f"127.0.0.1:{port}" for stage, port in stack.metrics_ports.items()}
    assert set(STAGE_PORTS) < set(stages)


async def seed(conn: psycopg.AsyncConnection[Any], now: datetime) -> None:
    """One site-level aggregate per panel's window, and a sensor with a recent measurement."""
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    day = hour.replace(hour=0) - timedelta(days=1)
    rows = [
        ("noise_aggregates", hour, 3600, {"laeq_db": 61.5}, None),
        ("noise_aggregates", day, 86400, {"lden_db": 66.25}, None),
        ("air_aggregates", hour, 3600, {"eaqi_band": 2.0, "pm2_5_ugm3_mean": 11.5}, None),
        (
            "traffic_aggregates",
            hour,
            3600,
            {},
            [
                {"line": 0, "direction": "in", "traffic_class": "bicycle", "count": 40},
                {"line": 0, "direction": "out", "traffic_class": "bicycle", "count": 2},
            ],
        ),
        ("occupancy_aggregates", hour, 900, {"occupancy_pct": 42.0, "affluence": 2.0}, None),
    ]
    for table, bucket, window_s, indicators, counts in rows:
        await conn.execute(
            f"INSERT INTO {table} (bucket, bucket_end, window_seconds, key, revision, final,"
            " sample_count, indicators, counts) VALUES (%s, %s, %s, 'site:nation', 0, true, 60,"
            " %s, %s)",
            (
                bucket,
                bucket + timedelta(seconds=window_s),
                window_s,
                Jsonb(indicators),
                None if counts is None else Jsonb(counts),
            ),
        )
    await conn.execute(
        "INSERT INTO sensors (id, kind, codec, site, lat, lon) VALUES"
        " ('nation-noise-1', 'noise', 'citysense-json', 'nation', 48.85, 2.39),"
        " ('nation-air-1', 'air', 'citysense-json', 'nation', 48.85, 2.39)"
    )
    await conn.execute(
        "INSERT INTO noise_measurements (time, sensor_id, received_at, codec, laeq_db)"
        " VALUES (%s, 'nation-noise-1', %s, 'citysense-json', 55.0)",
        (now - timedelta(minutes=5), now - timedelta(minutes=5)),
    )


async def test_every_sql_query_runs_as_the_reader(settings: Settings) -> None:
    now = datetime.now(UTC)
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            await seed(conn, now)
            await conn.execute("SET ROLE citysense_reader")
            results: dict[str, list[tuple[Any, ...]]] = {}
            for where, sql in sql_queries():
                expanded = expand_sql_macros(sql, now - timedelta(days=7), now)
                cursor = await conn.execute(expanded)
                results[where] = await cursor.fetchall()
    by_title = {where.split(": ", 1)[1]: rows for where, rows in results.items()}
    # Values read back through each panel's JSON path and cast, metric = the site.
    assert [(r[1], r[2]) for r in by_title["LAeq per site, hourly"]] == [("nation", 61.5)]
    assert [(r[1], r[2]) for r in by_title["Lden per site, daily"]] == [("nation", 66.25)]
    eaqi = "European Air Quality Index band per site, hourly (1 good .. 6 extremely poor)"
    assert [r[2] for r in by_title[eaqi]] == [2.0]
    # 40 in + 2 out of one class, summed per mode.
    assert [(r[1], r[2]) for r in by_title["Counts per mode, hourly, all sites"]] == [
        ("bicycle", 42)
    ]
    assert [r[2] for r in by_title["Pool affluence level (1 low)"]] == [2.0]
    # The noise sensor spoke 5 minutes ago; the air sensor never did and comes first.
    fleet = by_title["Sensors by last message (TimescaleDB)"]
    assert [r[0] for r in fleet] == ["nation-air-1", "nation-noise-1"]
    assert fleet[0][3] is None
