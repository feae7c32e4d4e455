"""The generated Grafana dashboards: up to date, well-formed, and using catalogued metrics only.

The integration test tests/integration/test_ops_consistency.py runs every query against the real
Prometheus and TimescaleDB.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from citysense.ops import collect_metrics, metric_modules, metric_names
from citysense.ops.__main__ import main
from citysense.ops.dashboards import (
    DASHBOARDS_DIR,
    expand_sql_macros,
    load,
    panels,
    render_dashboards,
)

ROOT = Path(__file__).resolve().parents[3]
NAMES = sorted(render_dashboards())


def provisioned_datasources() -> dict[str, str]:
    path = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "citysense.yml"
    return {d["uid"]: d["type"] for d in yaml.safe_load(path.read_text())["datasources"]}


def catalogued() -> set[str]:
    return {s.name for s in collect_metrics(metric_modules(ROOT))}


def series_of(name: str) -> str:
    """A histogram's ``_bucket``/``_sum``/``_count`` series belongs to the catalogued name."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_generated_files_are_up_to_date() -> None:
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == NAMES
    for name, text in render_dashboards().items():
        assert (DASHBOARDS_DIR / name).read_text() == text, (
            f"{name} is stale: python -m citysense.ops dashboards --write"
        )
    assert main(["dashboards"]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_shape(name: str) -> None:
    dashboard = load(name)
    # Grafana 11.6 writes schema version 41; an older number makes Grafana migrate on load.
    assert dashboard["schemaVersion"] == 41
    uid = dashboard["uid"]
    assert isinstance(uid, str)
    assert 0 < len(uid) <= 40  # Grafana's limit on dashboard uids
    ids = [p["id"] for p in panels(dashboard)]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    sources = provisioned_datasources()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        datasource = panel.get("datasource")
        assert isinstance(datasource, dict), f"{panel['title']}: no datasource"
        assert sources.get(datasource["uid"]) == datasource["type"], panel["title"]
        targets = panel["targets"]
        assert isinstance(targets, list)
        assert targets, f"{panel['title']}: no query"
        refs = [t["refId"] for t in targets]
        assert all(refs), panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in targets:
            assert target["datasource"] == datasource, panel["title"]
            assert ("expr" in target) == (datasource["type"] == "prometheus"), panel["title"]


def test_uids_are_unique_across_dashboards() -> None:
    uids = [load(name)["uid"] for name in NAMES]
    assert len(uids) == len(set(uids))


def test_every_metric_in_a_dashboard_or_rule_is_catalogued() -> None:
    known = catalogued()
    used: dict[str, str] = {}
    for name in NAMES:
        for panel in panels(load(name)):
            for target in panel.get("targets", []):
                for metric in metric_names(target.get("expr", "")):
                    used[series_of(metric)] = f"{name}: {panel['title']}"
    rules = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "rules" / "citysense.rules.yml").read_text()
    )
    for group in rules["groups"]:
        for rule in group["rules"]:
            for metric in metric_names(rule["expr"]):
                used[series_of(metric)] = f"rule {rule.get('alert') or rule.get('record')}"
    assert len(used) > 25
    missing = {metric: where for metric, where in used.items() if metric not in known}
    assert missing == {}


def test_the_dashboards_cover_the_issue_list() -> None:
    """Pipeline: rate, errors, duration per stage, end-to-end latency, lag, dead letters, late
    records; fleet; city: noise LAeq/Lden, EAQI, counts per mode, pool affluence."""
    text = {name: (DASHBOARDS_DIR / name).read_text() for name in NAMES}
    pipeline = text["citysense-pipeline.json"]
    for metric in (
        "citysense_ingest_received_messages_total",
        "citysense_aggregate_records_total",
        "citysense_sink_rows_written_total",
        "citysense_sink_end_to_end_latency_seconds_bucket",
        "citysense_sink_consumer_lag_records",
        "citysense_ingest_dead_letters_total",
        "citysense_aggregate_late_records_total",
    ):
        assert metric in pipeline, metric
    assert "citysense_fleet_silent_sensors" in text["citysense-fleet.json"]
    for indicator in ("laeq_db", "lden_db", "eaqi_band", "traffic_class", "affluence"):
        assert indicator in text["citysense-city.json"], indicator


def test_sql_macro_expansion() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2026, 1, 2, 12, 30, tzinfo=UTC)
    assert (
        expand_sql_macros("SELECT 1 WHERE $__timeFilter(a.bucket)", start, end)
        == "SELECT 1 WHERE a.bucket BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-02T12:30:00Z'"
    )
    with pytest.raises(ValueError, match="unexpanded"):
        expand_sql_macros("SELECT $__timeGroup(bucket, '1h')", start, end)
