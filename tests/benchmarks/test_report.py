"""BENCHMARKS.md from a hand-made results document: figures beside their references, ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import PLOT_NAME, comparisons_of, fmt, render_markdown, write_report


def _document(**benchmarks: dict[str, Any]) -> dict[str, Any]:
    return {
        "started_at": "2026-12-04T10:00:00+00:00",
        "finished_at": "2026-12-04T11:00:00+00:00",
        "host": {
            "python": "3.11.2",
            "platform": "Linux-6.1-x86_64",
            "cpus": 2,
            "cpu_model": "Test CPU @ 2.0GHz",
            "memory_bytes": 8 * 1024**3,
        },
        "benchmarks": benchmarks,
    }


INGEST: dict[str, Any] = {
    "status": "ok",
    "seconds": 300.0,
    "load_before": 0.5,
    "load_after": 1.5,
    "result": {
        "ceiling": {"received_per_s": 40_000.0, "published_per_s": 41_000.0},
        "throughput": [
            {"processes": 1, "ingest_per_s": 20_000.0, "peak_rss_mb": 80.0},
            {"processes": 2, "ingest_per_s": 30_000.0, "peak_rss_mb": 150.0},
        ],
        "backlog": {"drain_per_s": 10_000.0},
        "latency": {"rate_per_s": 5000.0, "p50_ms": 12.5, "p99_ms": 125.0},
        "soak": None,
        "summary": "ingest 30,000 msg/s",
        "target_met": True,
    },
}

SAMPLES = [
    {
        "t": 5.0 * i,
        "phase": "load" if i < 4 else "drain",
        "rate": {"ingest": 1000.0 + i, "sink": 990.0},
        "lag": {"sink": 10 * i, "aggregate": None},
        "rss_mb": {"ingest": 60.0, "sink": 90.0 + i},
    }
    for i in range(6)
]

END_TO_END: dict[str, Any] = {
    "status": "ok",
    "seconds": 200.0,
    "load_before": 1.0,
    "load_after": 2.0,
    "result": {
        "layout": "stages",
        "rate_asked_per_s": 10_000.0,
        "duration_s": 120.0,
        "sustained_per_s": 8000.0,
        "simulator": {"sent": 1_200_000},
        "summary": "8,000 msg/s sustained",
        "target_met": False,
        "targets": {
            "rate": False,
            "duration": False,
            "zero_loss": True,
            "p99": True,
            "flat_memory": True,
        },
        "peak_rss_mb": {"sink": 95.0, "ingest": 60.0},
        "samples": SAMPLES,
        "comparisons": [
            {
                "figure": "sustained (slowest stage)",
                "value": 8000.0,
                "unit": "msg/s",
                "versus": "target",
                "versus_value": 10_000.0,
            },
            {
                "figure": "latency p99",
                "value": None,
                "unit": "s",
                "versus": "target",
                "versus_value": 2.0,
            },
        ],
    },
}

FAILED: dict[str, Any] = {
    "status": "failed",
    "seconds": 3.0,
    "error": "Traceback ...\nRuntimeError: no broker",
}


def _row(page: str, start: str) -> str:
    return next(line for line in page.splitlines() if line.startswith(f"| {start}"))


def test_each_figure_is_beside_its_reference_with_the_ratio() -> None:
    rows = comparisons_of("ingest", INGEST["result"])
    versus = {(c.figure, c.versus): c for c in rows}
    one = versus["ingest x1: Kafka-acknowledged", "mosquitto_sub -q 1 (ceiling)"]
    # 20,000 of a 40,000 ceiling.
    assert one.ratio == 0.5
    assert versus["ingest x2: Kafka-acknowledged", "target"].ratio == 1.5
    assert versus["latency p99 at 5,000 msg/s", "target p99"].ratio == 0.5
    page = render_markdown(_document(ingest=INGEST), "bench-results/x.json")
    line = _row(page, "ingest x1: Kafka-acknowledged | 20,000 msg/s | mosquitto_sub")
    assert line.endswith("| 40,000 msg/s | 0.50 |")


def test_page_names_the_machine_the_date_and_the_source() -> None:
    page = render_markdown(_document(ingest=INGEST), "bench-results/x.json")
    assert "Test CPU @ 2.0GHz, 2 logical CPUs" in page
    assert "| memory | 8.0 GiB |" in page
    assert "2026-12-04T10:00:00+00:00" in page
    assert "python -m benchmarks.report bench-results/x.json" in page


def test_end_to_end_comes_first_with_its_targets_and_plot() -> None:
    page = render_markdown(_document(ingest=INGEST, end_to_end=END_TO_END), "r.json")
    sections = [line for line in page.splitlines() if line.startswith("## ")]
    assert sections == ["## Machine and run", "## Summary", "## end_to_end", "## ingest"]
    assert "| ≥ 10,000 msg/s through every stage | **no** |" in page
    assert "| zero loss | yes |" in page
    assert "asked for 2 min (stages layout)" in page
    assert f"![rate, lag and RSS over the run]({PLOT_NAME})" in page
    assert _row(page, "sustained (slowest stage)").endswith("| 10,000 msg/s | 0.80 |")
    # A figure the run could not measure is left out rather than shown as 0.
    assert "latency p99 |" not in page
    assert "CITYSENSE_BENCH_E2E_SECONDS=600" in page
    # Beside the stages' own capacities from the same run (ingest's best is 30,000).
    assert _row(page, "sustained end to end | 8,000 msg/s | ingest alone").endswith(
        "| 30,000 msg/s | 0.27 |"
    )
    # No aggregate benchmark in this run: no row pretending to compare with it.
    assert "aggregate alone" not in page


def test_a_full_length_run_does_not_point_to_the_full_run() -> None:
    full = {**END_TO_END, "result": {**END_TO_END["result"], "duration_s": 600.0}}
    page = render_markdown(_document(end_to_end=full), "r.json")
    assert "asked for 10 min (stages layout)" in page
    assert "It lasted the issue's 10 min." in page
    assert "CITYSENSE_BENCH_E2E_SECONDS=600" not in page


def test_a_failed_benchmark_shows_its_error_and_the_others_still_render() -> None:
    page = render_markdown(_document(ingest=INGEST, publish=FAILED), "r.json")
    assert "Failed: `RuntimeError: no broker`" in page
    assert _row(page, "publish").startswith("| publish | failed |")
    assert _row(page, "ingest |").startswith("| ingest | met |")


def test_unknown_benchmark_without_comparisons_has_none() -> None:
    assert comparisons_of("future_bench", {"x": 1.0}) == []


def test_write_report_draws_the_plot_beside_the_page(tmp_path: Path) -> None:
    page = write_report(_document(end_to_end=END_TO_END), "r.json", tmp_path)
    assert page == tmp_path / "BENCHMARKS.md"
    png = (tmp_path / PLOT_NAME).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000  # three panels with lines, not an empty canvas


def test_number_format() -> None:
    assert fmt(12_345.6) == "12,346"
    assert fmt(123.4) == "123"
    assert fmt(12.34) == "12.3"
    assert fmt(1.234) == "1.23"
    assert fmt(0.01234) == "0.0123"
    assert fmt(0.0) == "0"
    assert fmt(None) == "-"


def test_fast_paths_stand_beside_their_plain_path() -> None:
    ingest = {**INGEST["result"], "fast_paths": {"mqtt-read": {"on": 27_000.0, "off": 9_000.0}}}
    sink = {
        "noise.psql_copy_rows_per_s": 100_000.0,
        "fast_paths.sink-copy.on": 60_000.0,
        "fast_paths.sink-copy.off": 48_000.0,
        "fast_paths.sink-copy.on_runs": [59_000.0, 60_000.0, 61_000.0],
        "fast_paths.sink-copy.on_cpu_us_per_row": 10.0,
        "fast_paths.sink-copy.off_cpu_us_per_row": 16.0,
    }
    read = next(c for c in comparisons_of("ingest", ingest) if "mqtt-read" in c.figure)
    assert (read.versus, read.ratio) == ("mqtt-read off, same backlog", 3.0)
    copy = {c.figure: c for c in comparisons_of("sink_timescale", sink)}
    on = copy["fast path sink-copy on: noise end-to-end (median of 3)"]
    assert on.ratio == 1.25
    assert copy["sink CPU, sink-copy on"].ratio == 0.625


def test_grid_puts_positioned_records_beside_fixed_ones() -> None:
    stages = ("aggregator_records_s", "window_stage_records_s", "grid_stage_records_s")
    result = {
        "fixed": dict(zip(stages, (100_000.0, 200_000.0, 200_000.0), strict=True)),
        "positioned": dict(zip(stages, (50_000.0, 150_000.0, 75_000.0), strict=True)),
    }
    rows = {c.figure: c.ratio for c in comparisons_of("grid", result)}
    assert rows == {
        "positioned records, window + grid stages": 0.5,
        "positioned records, window stage": 0.75,
        "positioned records, grid stage": 0.375,
    }


def test_the_lighter_run_is_named_in_the_head_with_its_verdicts() -> None:
    lighter = {
        **END_TO_END,
        "result": {
            **END_TO_END["result"],
            "light": {
                "rate_asked_per_s": 2500.0,
                "duration_s": 120.0,
                "p99_met": True,
                "zero_loss": False,
            },
        },
    }
    page = render_markdown(_document(end_to_end=lighter), "r.json")
    assert "A lighter run on a fresh stack, 2,500 msg/s asked for 120 s" in page
    assert "under 2 s yes, zero loss **no**" in page
    # Without one, no such paragraph.
    assert "lighter run" not in render_markdown(_document(end_to_end=END_TO_END), "r.json")


def test_aggregate_rates_stand_beside_quix_and_the_target() -> None:
    result = {
        "quix": {"records_per_s": 20_000.0, "peak_rss_mb": 200.0},
        "citysense_1m": {"records_per_s": 190_000.0, "peak_rss_mb": 300.0},
        "citysense_1m_sensor": {"records_per_s": 250_000.0, "peak_rss_mb": 260.0},
        "citysense_1h": {"records_per_s": 300_000.0, "peak_rss_mb": 240.0},
    }
    rows = {(c.figure, c.versus): c.ratio for c in comparisons_of("aggregate", result)}
    quix = "Quix Streams peer, 1-min, per sensor"
    assert rows[("citysense aggregate, 1-min windows", quix)] == 9.5
    assert rows[
        ("citysense aggregate, 1-min windows, per sensor only (the peer's work)", quix)
    ] == (12.5)
    assert rows[("citysense aggregate, 1-min windows", "target")] == 0.95
    # An older results file without the per-sensor run or the ceilings: no such rows.
    assert not any("ceiling" in versus for _, versus in rows)
    result["read_aiokafka"] = {"records_per_s": 400_000.0}
    result["read_confluent_kafka"] = {"records_per_s": 800_000.0}
    rows = {(c.figure, c.versus): c.ratio for c in comparisons_of("aggregate", result)}
    ceiling = "aiokafka alone, read only (its client's ceiling)"
    assert rows[("citysense aggregate, 1-min windows", ceiling)] == 0.475
    peer = "confluent-kafka alone, read only (its client's ceiling)"
    assert rows[("Quix Streams peer, 1-min", peer)] == 0.025
    in_memory = "citysense window stage alone, in memory (no Kafka), 1-min, per sensor"
    assert (in_memory, quix) not in rows  # older files have no in-memory run
    result["stage_in_memory"] = {"records_per_s": 600_000.0}
    rows = {(c.figure, c.versus): c.ratio for c in comparisons_of("aggregate", result)}
    assert rows[(in_memory, quix)] == 30.0
    del result["citysense_1m_sensor"]
    assert not any("per sensor only" in c.figure for c in comparisons_of("aggregate", result))
