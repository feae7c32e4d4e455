"""The aggregation benchmark's own logic (the run itself is ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.aggregate import SENSORS, aggregator_env, stage_work


def test_settings_asked_reach_the_aggregator_and_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    windows = [{"name": "1m", "size_s": 60, "scopes": ["sensor"]}]
    monkeypatch.setenv("CITYSENSE_BENCH_AGG_SET_AGGREGATE_WINDOWS", json.dumps(windows))
    monkeypatch.setenv("CITYSENSE_BENCH_AGG_SET_KAFKA_FETCH_MAX_WAIT_MS", "100")
    monkeypatch.setenv("CITYSENSE_KAFKA_LINGER_MS", "50")  # the caller's own: not passed on
    base = {"CITYSENSE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    env = aggregator_env(base, tmp_path / "registry.toml", [{"name": "1h", "size_s": 3600}], 1)
    assert json.loads(env["CITYSENSE_AGGREGATE_WINDOWS"]) == windows
    assert env["CITYSENSE_KAFKA_FETCH_MAX_WAIT_MS"] == "100"
    assert "CITYSENSE_KAFKA_LINGER_MS" not in env
    assert "CITYSENSE_BENCH_AGG_SET_AGGREGATE_WINDOWS" not in env
    assert env["CITYSENSE_KAFKA_BOOTSTRAP"] == "127.0.0.1:9"


@pytest.mark.parametrize(("minutes", "closed"), [(2, 1), (4, 3)])
def test_the_in_memory_stage_emits_each_closed_window_of_each_sensor(
    minutes: int, closed: int
) -> None:
    # A sensor reports every 10 s from an hour's start, so ``minutes`` minutes of records; the
    # watermark trails the newest by the default 10 s and a 1-minute window closes 5 s after
    # its end: every minute but the last is emitted, once per sensor.
    seconds, results = stage_work(SENSORS * 6 * minutes)
    assert results == SENSORS * closed
    assert seconds > 0
