"""The metrics catalogue: found from the code, complete, and docs/metrics.md up to date."""

from __future__ import annotations

import re
from pathlib import Path

from citysense.ops import MetricSpec, collect_metrics, metric_modules, render_markdown, unit_of
from citysense.ops.__main__ import main

ROOT = Path(__file__).resolve().parents[3]


def catalogue() -> dict[str, object]:
    return {s.name: s for s in collect_metrics(metric_modules(ROOT))}


def test_docs_metrics_md_is_up_to_date() -> None:
    expected = render_markdown(collect_metrics(metric_modules(ROOT)))
    actual = (ROOT / "docs" / "metrics.md").read_text()
    assert actual == expected, "docs/metrics.md is stale: python -m citysense.ops catalogue --write"
    assert main(["catalogue"]) == 0


def test_every_metric_constructor_in_the_source_is_catalogued() -> None:
    """Independent of the import-based discovery: every literal ``citysense_*`` name passed to
    a prometheus_client constructor anywhere in the packages is in the catalogue."""
    constructor = re.compile(r"(Counter|Gauge|Histogram|Summary)\(\s*\"(citysense_\w+)\"")
    declared: dict[str, str] = {}
    for package in ("citysense", "ingest", "decoders", "streams", "sinks", "schemas", "simulators"):
        for path in (ROOT / package).rglob("*.py"):
            for kind, name in constructor.findall(path.read_text()):
                declared[
                    name + ("_total" if kind == "Counter" and not name.endswith("_total") else "")
                ] = kind
    assert declared, "the regex found nothing: it is broken"
    assert set(declared) == set(catalogue())


def test_the_known_stage_metrics_are_there_with_their_labels() -> None:
    specs = catalogue()
    ingest = specs["citysense_ingest_received_messages_total"]
    assert (ingest.type, ingest.labels) == ("counter", ("family",))  # type: ignore[attr-defined]
    lag = specs["citysense_sink_consumer_lag_records"]
    assert (lag.type, lag.labels) == ("gauge", ("topic",))  # type: ignore[attr-defined]
    e2e = specs["citysense_sink_end_to_end_latency_seconds"]
    assert (e2e.type, e2e.unit) == ("histogram", "seconds")  # type: ignore[attr-defined]


def test_discovery_reads_module_level_and_dataclass_held_metrics(
    tmp_path: Path, monkeypatch
) -> None:
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_m.py").write_text(
        "from dataclasses import dataclass\n"
        "from prometheus_client import CollectorRegistry, Counter, Histogram\n"
        "R = CollectorRegistry()\n"
        "A = Counter('citysense_fake_things_total', 'Things.', ['kind'], registry=R)\n"
        "@dataclass(frozen=True)\n"
        "class _M:\n"
        "    h: Histogram\n"
        "M = _M(Histogram('citysense_fake_wait_seconds', 'Wait.', registry=R))\n"
        "OTHER = Counter('somebody_elses_total', 'Not ours.', registry=R)\n"
    )
    (package / "_plain.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = metric_modules(tmp_path, ("fakepkg",))
    assert modules == ["fakepkg._m"]
    specs = collect_metrics(modules)
    assert [(s.name, s.type, s.labels) for s in specs] == [
        ("citysense_fake_things_total", "counter", ("kind",)),
        ("citysense_fake_wait_seconds", "histogram", ()),
    ]


def test_units_come_from_the_suffix() -> None:
    assert unit_of("citysense_sink_batch_duration_seconds", "histogram") == "seconds"
    assert unit_of("citysense_aggregate_state_bytes", "gauge") == "bytes"
    assert unit_of("citysense_fleet_rssi_dbm", "histogram") == "dBm"
    assert unit_of("citysense_fleet_snr_db", "histogram") == "dB"
    assert unit_of("citysense_ingest_duplicates_total", "counter") == "1"


def test_rendered_table_escapes_pipes_and_groups_by_subsystem() -> None:
    text = render_markdown(
        [
            MetricSpec("citysense_sink_x_total", "counter", ("table",), "a | b", "m"),
            MetricSpec("citysense_ingest_y_seconds", "histogram", (), "y", "n"),
        ]
    )
    assert "a \\| b" in text
    assert "## sink" in text
    assert "## ingest" in text
    assert "| `citysense_ingest_y_seconds` | histogram | — | seconds | y | `n` |" in text
