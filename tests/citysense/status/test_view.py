"""The status view rendered to plain text from a hand-made snapshot."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console

from citysense.status import GroupLag, SiteIndicator, Snapshot, StageRate, headline, render
from citysense.status import window_label as label


def _snapshot(**changes: object) -> Snapshot:
    fields: dict[str, object] = {
        "taken_at": datetime(2026, 12, 4, 11, 0, tzinfo=UTC),
        "interval_s": 2.0,
        "stages": [
            StageRate("ingest", True, 5012.4, 5012.4, 1_000_000),
            StageRate("sink", False, None, None, None),
        ],
        "processes": {"run@28080": 300 * 1024 * 1024},
        "lags": [GroupLag("sink", "citysense-sink-timescale", ("t",), 1234, 4)],
        "dead_letters": 3.0,
        "dead_letter_rate": 0.5,
        "late_records": 0.0,
        "late_rate": 0.0,
        "watermark_delay_s": 7.25,
        "mqtt_queued": 17.0,
        "sites": [
            SiteIndicator(
                "piscine-nation",
                "occupancy",
                900,
                datetime(2026, 12, 4, 10, 45, tzinfo=UTC),
                True,
                {"people_mean": 81.26, "occupancy_pct": 32.5, "affluence": 2.0},
            )
        ],
        "problems": [],
    }
    fields.update(changes)
    return Snapshot(**fields)  # type: ignore[arg-type]


def _text(snapshot: Snapshot) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(render(snapshot))
    return console.export_text()


def test_view_shows_every_figure() -> None:
    text = _text(_snapshot())
    assert "5,012/s" in text
    assert "1,000,000" in text
    assert "down" in text
    assert "1,234" in text
    assert "300 MiB" in text
    assert "7.2 s" in text or "7.3 s" in text
    assert "piscine-nation" in text
    assert "15 min" in text
    assert "people_mean=81.3" in text
    assert "affluence=2" in text


def test_problems_are_listed_and_no_site_is_said() -> None:
    text = _text(_snapshot(sites=[], problems=["Kafka at k:9092: unreachable"]))
    assert "problem: Kafka at k:9092: unreachable" in text
    assert "no site window in the last day" in text


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(60, "1 min"), (900, "15 min"), (3600, "1 h"), (86_400, "1 day"), (45, "45 s")],
)
def test_window_label(seconds: int, expected: str) -> None:
    assert label(seconds) == expected


def test_headline_puts_the_kind_s_indicators_first_and_keeps_four() -> None:
    values = {"aaa": 1.0, "lamax_db": 80.0, "laeq_db": 60.0, "zzz": 2.0, "bbb": 3.0}
    assert headline("noise", values) == [
        ("laeq_db", 60.0),
        ("lamax_db", 80.0),
        ("aaa", 1.0),
        ("bbb", 3.0),
    ]
