"""Naming rules: base units, ``_total`` counters, bounded labels; on the real catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from citysense.ops import MetricSpec, collect_metrics, metric_modules, naming_violations

ROOT = Path(__file__).resolve().parents[3]


def test_the_catalogue_follows_the_rules() -> None:
    specs = collect_metrics(metric_modules(ROOT))
    assert len(specs) > 30
    assert naming_violations(specs) == []


def spec(name: str, kind: str = "gauge", labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(name, kind, labels, "help", "m")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (spec("citysense_sink_rows", "counter"), "ends in _total"),
        (spec("citysense_sink_rows_total"), "only counters"),
        (spec("citysense_sink_write_ms"), "base unit"),
        (spec("citysense_sink_queue_megabytes"), "base unit"),
        (spec("citysense_sink_flush_latency"), "_seconds"),
        (spec("citysense_sink_rows_count"), "histogram's series"),
        (spec("citysense_ingest_messages_total", "counter", ("sensor_id",)), "bounded-label"),
        (spec("citysense_ingest_messages_total", "counter", ("dev_eui",)), "bounded-label"),
        (spec("citysense_weather_temp_celsius"), "subsystem"),
        (spec("city_ingest_x"), "citysense_<subsystem>"),
        (MetricSpec("citysense_sink_ready", "gauge", (), " ", "m"), "help"),
    ],
)
def test_each_rule_catches_its_violation(bad: MetricSpec, why: str) -> None:
    problems = naming_violations([bad])
    assert problems, bad
    assert any(why in p for p in problems), problems


def test_good_names_pass() -> None:
    good = [
        spec("citysense_sink_rows_written_total", "counter", ("table",)),
        spec("citysense_sink_batch_duration_seconds", "histogram"),
        spec("citysense_fleet_silent_sensors", "gauge", ("kind", "site")),
    ]
    assert naming_violations(good) == []
