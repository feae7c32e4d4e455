"""The end-to-end benchmark's pure figures: quantiles, steady rates, flat memory, loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.end_to_end import (
    cpu_per_message,
    flat_memory,
    histogram_buckets,
    histogram_quantile,
    latency_figures,
    light_comparisons,
    light_figures,
    live_figures,
    loss_figures,
    records_per_batch,
    scaled_registry,
    stage_settings,
    steady_rate,
)
from citysense.registry import load_registry, scenario_path

# 100 observations: 50 at or under 0.5 s, 40 more under 1 s, 9 under 2 s, 1 under 5 s.
BUCKETS = [(0.5, 50.0), (1.0, 90.0), (2.0, 99.0), (5.0, 100.0), (float("inf"), 100.0)]


def test_quantile_interpolates_within_the_bucket() -> None:
    assert histogram_quantile(BUCKETS, 0.5) == 0.5
    # Rank 70 is halfway through the (0.5, 1] bucket's 40 observations.
    assert histogram_quantile(BUCKETS, 0.7) == pytest.approx(0.75)
    assert histogram_quantile(BUCKETS, 0.99) == 2.0
    assert histogram_quantile([], 0.5) is None
    assert histogram_quantile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_latency_figures_share_within_target_and_max_bucket() -> None:
    figures = latency_figures(BUCKETS)
    assert figures["count"] == 100
    assert figures["share_within_target"] == 0.99
    assert figures["max_at_most_s"] == 5.0


def test_histogram_buckets_sum_the_kinds() -> None:
    text = "\n".join(
        [
            "# HELP lat latency",
            "# TYPE lat histogram",
            *(
                f'lat_bucket{{kind="{kind}",le="{le}"}} {count}'
                for kind, n in (("noise", 1), ("air", 2))
                for le, count in (("1.0", 3 * n), ("+Inf", 4 * n))
            ),
            'lat_count{kind="noise"} 4',
            'lat_sum{kind="noise"} 2.5',
        ]
    )
    assert histogram_buckets(text + "\n", "lat") == [(1.0, 9.0), (float("inf"), 12.0)]


def test_steady_rate_drops_the_ramp_and_the_tail() -> None:
    assert steady_rate([10.0, 1000.0, 1010.0, 990.0, 20.0]) == 1000.0
    assert steady_rate([None, 5.0, 7.0]) == 6.0
    assert steady_rate([None]) is None


def test_cpu_per_message_spreads_each_process_over_the_messages_ingested() -> None:
    def sample(phase: str, ingested: int, cpu: dict[str, float | None]) -> dict[str, object]:
        return {"phase": phase, "total": {"ingest": ingested}, "cpu_s": cpu}

    samples = [
        sample("startup", 0, {"ingest": 0.5, "sink": 0.1}),
        sample("load", 1_000, {"ingest": 1.0, "sink": 2.0, "kafka": 3.0, "gone": 1.0}),
        sample("load", 5_000, {"ingest": 1.1, "sink": 2.5, "kafka": 2.0, "gone": None}),
        sample("load", 11_000, {"ingest": 1.5, "sink": 3.0, "kafka": 1.0, "gone": None}),
        sample("drain", 12_000, {"ingest": 9.0, "sink": 9.0, "kafka": 9.0, "gone": None}),
    ]
    # 10,000 messages between the first and last load samples; kafka restarted (its counter
    # went back) and "gone" exited: both left out rather than counted wrong.
    assert cpu_per_message(samples) == pytest.approx({"ingest": 50.0, "sink": 100.0})
    assert cpu_per_message(samples[:2]) == {}
    assert cpu_per_message([sample("load", 5, {"a": 1.0}), sample("load", 5, {"a": 2.0})]) == {}


def test_flat_memory_compares_second_and_last_quarters() -> None:
    series = [(float(t), 100.0 + (t if t > 90 else 0)) for t in range(0, 121, 10)]
    # Second quarter [30, 60): 100 MiB; last [90, 120]: up to 220 MiB.
    grown = flat_memory(series, 120.0)
    assert grown["second_quarter_mb"] == 100.0
    assert grown["last_quarter_mb"] == 220.0
    assert grown["flat"] is False
    steady = flat_memory([(float(t), 100.0 + t / 100) for t in range(0, 121, 10)], 120.0)
    assert steady["flat"] is True
    assert flat_memory([(0.0, 1.0)], 120.0)["flat"] is None


def test_loss_needs_every_record_in_kafka_and_a_row_per_distinct_measurement() -> None:
    summary = {"sent": 103, "malformed": 3, "by_kind": {"noise": 60, "air": 40}}
    kafka = {"noise": 60, "air": 40, "traffic": 0, "occupancy": 0}
    # 5 noise messages repeated an earlier (sensor, observed_at): 55 rows are all of them.
    distinct = {"noise": 55, "air": 40, "traffic": 0, "occupancy": 0}
    whole = loss_figures(summary, kafka, distinct, dict(distinct), 3)
    assert whole["zero_loss"] is True
    assert whole["repeated_measurements"] == 5
    short = loss_figures(summary, kafka, distinct, {**distinct, "air": 39}, 3)
    assert short["zero_loss"] is False
    assert short["missing_rows"] == 1
    lost_in_ingest = loss_figures(summary, {**kafka, "noise": 59}, distinct, dict(distinct), 3)
    assert lost_in_ingest["zero_loss"] is False
    assert lost_in_ingest["missing_in_kafka"] == 1
    assert loss_figures(summary, kafka, distinct, dict(distinct), 2)["zero_loss"] is False


def test_live_figures_nearest_rank() -> None:
    figures = live_figures([3.0, 1.0, 2.0, 10.0], ["one error"])
    assert figures["count"] == 4
    assert figures["p50_s"] == 2.0  # rank ceil(0.5 * 4) = 2
    assert figures["p99_s"] == 10.0
    assert figures["max_s"] == 10.0
    assert figures["errors"] == ["one error"]
    assert live_figures([], [])["p50_s"] is None


def test_scaled_registry_repeats_every_sensor_with_new_ids_and_euis(tmp_path: Path) -> None:
    nation = load_registry(scenario_path("nation"))
    scaled = load_registry(scaled_registry(3, tmp_path / "r.toml"))
    assert len(scaled.sensors) == 3 * len(nation.sensors)
    originals = nation.sensors
    copies = [s for s in scaled.sensors.values() if s.id.endswith("-k02")]
    assert len(copies) == len(nation.sensors)
    for copy in copies:
        original = originals[copy.id.removesuffix("-k02")]
        assert (copy.kind, copy.codec, copy.site) == (original.kind, original.codec, original.site)
        if original.dev_eui is not None:
            assert copy.dev_eui == original.dev_eui[:8] + "02" + original.dev_eui[10:]


def test_stage_settings_pass_only_the_set_variables_on() -> None:
    environ = {
        "CITYSENSE_BENCH_E2E_SET_KAFKA_FETCH_MAX_WAIT_MS": "500",
        "CITYSENSE_BENCH_E2E_SET_INGEST_LINGER_MS": "20",
        "CITYSENSE_BENCH_E2E_SET_": "ignored: no name",
        "CITYSENSE_BENCH_E2E_RATE": "3000",
        "CITYSENSE_KAFKA_LINGER_MS": "50",
    }
    assert stage_settings(environ) == {
        "CITYSENSE_KAFKA_FETCH_MAX_WAIT_MS": "500",
        "CITYSENSE_INGEST_LINGER_MS": "20",
    }


def _run_figures(p99: float, share: float, drain: float | None) -> dict[str, object]:
    return {
        "rate_asked_per_s": 2500.0,
        "duration_s": 120.0,
        "offered_per_s": 2490.0,
        "sustained_per_s": 2480.0,
        "drain_s": drain,
        "zero_loss": True,
        "latency": {"p50_s": 0.4, "p99_s": p99, "max_s": 3.0, "share_within_target": share},
        "cpu_us_per_message": {"kafka": 60.0, "ingest": 40.0},
    }


def test_light_figures_judge_p99_on_the_share_within_two_seconds() -> None:
    light = light_figures(_run_figures(1.2, 0.995, 4.0))
    assert light["p99_met"] is True
    assert light["kept_up"] is True
    assert light["cpu_us_per_message"] == 100.0
    slow = light_figures(_run_figures(2.5, 0.98, None))
    assert slow["p99_met"] is False
    assert slow["kept_up"] is False


def test_light_comparisons_are_named_after_the_rate_and_beside_the_main_run() -> None:
    rows = {
        r["figure"]: r for r in light_comparisons(light_figures(_run_figures(1.0, 1.0, 1.0)), 400.0)
    }
    p99 = rows["at 2,500 msg/s: latency p99 observed_at → row"]
    assert p99["ratio"] == 0.5
    cpu = rows["at 2,500 msg/s: CPU per message, all processes"]
    assert cpu["versus_value"] == 400.0
    assert cpu["ratio"] == 0.25
    # No main-run figure: no ratio rather than a division by zero.
    unmatched = light_comparisons(light_figures(_run_figures(1.0, 1.0, 1.0)), None)
    assert unmatched[-1]["ratio"] is None


def test_records_per_batch_divides_records_acknowledged_by_batches_over_topics() -> None:
    text = "\n".join(
        [
            "# TYPE citysense_ingest_produced_records_total counter",
            'citysense_ingest_produced_records_total{topic="city.noise.measurements.v1"} 300.0',
            'citysense_ingest_produced_records_total{topic="city.air.measurements.v1"} 100.0',
            "# TYPE citysense_ingest_kafka_produce_seconds histogram",
            'citysense_ingest_kafka_produce_seconds_bucket{le="+Inf"} 25.0',
            "citysense_ingest_kafka_produce_seconds_count 25.0",
            "citysense_ingest_kafka_produce_seconds_sum 0.5",
            "",
        ]
    )
    assert records_per_batch(text) == 16.0
    assert records_per_batch("") is None
