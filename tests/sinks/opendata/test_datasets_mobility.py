"""The "Comptage des mobilités" views: valid against the national Table Schemas, every hourly
slot present, empty for no measurement and 0 for nothing counted, and live positions that never
put a new row behind a reader.

The schemas and examples are the national ones (``comptage_mobilites/``, see its README); the
CSV is written the way the portal renders these fields: ISO 8601 datetimes with their offset,
numbers as decimals, empty cells for null, comma-separated like the national example files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from frictionless import Report, Resource, Schema, validate

from citysense.settings import PublishSettings, Settings
from sinks.opendata._catalog import Dataset
from sinks.opendata._datasets import default_catalog
from sinks.timescale import MIGRATIONS
from sinks.timescale import _migrations as migrations
from sinks.timescale._registry import sync_registry
from tests.sinks._helpers import fresh_database
from tests.sinks.opendata._db import (
    HOUR,
    REGISTRY,
    count,
    fetch,
    opendata_database,
    window,
    write_windows,
)

pytestmark = pytest.mark.integration

NATIONAL = Path(__file__).parent / "comptage_mobilites"
H0 = datetime(2026, 5, 4, 6, tzinfo=UTC)
CATALOG = default_catalog(PublishSettings())


def hour(i: int) -> datetime:
    return H0 + i * HOUR


def hourly(key: str, i: int, *entries: dict[str, Any], final: bool = True) -> dict[str, Any]:
    return window(key, "traffic", hour(i), 3600, counts=entries, final=final)


# cam-a (site bd, VS133 camera): line 1 pedestrians, line 2 bicycles, both directions. Hour 1
# has no result at all; in hour 2 the bicycle line reported nothing; hour 3 counted zeros.
# radar-a (PCR2 radar, no site): line 1 cars; in hour 1 the "out" direction only has a
# cumulative reading.
WINDOWS = [
    hourly(
        "cam-a",
        0,
        count(1, "in", "pedestrian", 5),
        count(1, "out", "pedestrian", 0),
        count(2, "in", "bicycle", 2),
        count(2, "out", "bicycle", 1),
    ),
    hourly("cam-a", 2, count(1, "in", "pedestrian", 7), count(1, "out", "pedestrian", 3)),
    hourly(
        "cam-a",
        3,
        count(1, "in", "pedestrian", 0),
        count(1, "out", "pedestrian", 0),
        count(2, "in", "bicycle", 4),
        count(2, "out", "bicycle", 0),
    ),
    hourly("cam-a", 4, count(1, "in", "pedestrian", 9), final=False),  # still open
    hourly("radar-a", 0, count(1, "in", "car", 10), count(1, "out", "car", 12)),
    hourly("radar-a", 1, count(1, "in", "car", 0), count(1, "out", "car", None)),
    hourly("site:bd", 0, count(0, "in", "pedestrian", 5)),  # a site's rollup
    hourly("ghost:0002", 0, count(1, "in", "car", 1)),  # unregistered: no position
    window("cam-a", "traffic", hour(0), 60, counts=[count(1, "in", "pedestrian", 1)]),
]

#: channel → counts of its hours from its first to its last counted hour (None: no measure).
EXPECTED_MEASURES: dict[str, list[float | None]] = {
    "cam-a-1-in-pedestrian": [5, None, 7, 0],
    "cam-a-1-out-pedestrian": [0, None, 3, 0],
    "cam-a-2-in-bicycle": [2, None, None, 4],
    "cam-a-2-out-bicycle": [1, None, None, 0],
    "radar-a-1-in-car": [10, 0],
    "radar-a-1-out-car": [12],
}


@pytest.fixture(scope="module")
async def url(settings: Settings) -> AsyncIterator[str]:
    async with (
        opendata_database(settings) as db_url,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        await write_windows(conn, WINDOWS)
        yield db_url


def national_schema(name: str) -> Schema:
    """A national Table Schema. The channel and measure schemas put ``required`` (and ``enum``)
    beside a field's type instead of inside ``constraints``, which the Table Schema
    specification (and frictionless 5) reject; they are moved there, as their authors meant."""
    descriptor = json.loads((NATIONAL / name / "schema.json").read_text(encoding="utf-8"))
    for field in descriptor["fields"]:
        for key in ("required", "enum"):
            if key in field:
                field.setdefault("constraints", {})[key] = field.pop(key)
    return Schema.from_descriptor(descriptor)


def cell(value: Any) -> str:
    """A value as the portal writes it in CSV: datetimes in ISO 8601 with their offset."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def render_csv(dataset: Dataset, rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [f.name for f in dataset.fields]
    writer.writerow(names)
    writer.writerows([[cell(row[name]) for name in names] for row in rows])
    return out.getvalue()


def resource(path: Path, schema: Schema) -> Resource:
    # frictionless reads only paths under its base path ("not safe" otherwise).
    return Resource(path=path.name, basepath=str(path.parent), schema=schema)


def validate_csv(tmp_path: Path, name: str, text: str) -> Report:
    path = tmp_path / f"{name}.csv"
    path.write_text(text, encoding="utf-8")
    report: Report = validate(resource(path, national_schema(name)))
    return report


def errors(report: Report) -> list[str]:
    return [error.message for task in report.tasks for error in task.errors]


async def rows_of(url: str, dataset_id: str, order: str) -> list[dict[str, Any]]:
    view = CATALOG.get(dataset_id).view
    return await fetch(url, f"SELECT * FROM opendata.{view} ORDER BY {order}")


@pytest.mark.parametrize(
    ("name", "example"),
    [
        ("site", "exemple-valide.csv"),
        ("site", "exemple-valide-eco-compteur.csv"),
        ("channel", "exemple-valide.csv"),
        ("channel", "exemple-valide-eco-compteur.csv"),
        ("measure", "exemple-valide.csv"),
        ("measure", "exemple-valide-eco-compteur.csv"),
    ],
)
def test_the_national_examples_are_valid_under_the_schemas_as_read(name: str, example: str) -> None:
    report = validate(resource(NATIONAL / name / example, national_schema(name)))
    assert report.valid, errors(report)


def test_the_national_invalid_example_is_invalid() -> None:
    name = "channel"
    report = validate(resource(NATIONAL / name / "exemple-invalide.csv", national_schema(name)))
    messages = " ".join(errors(report))
    assert "primary key" in messages
    assert "mobility_type" in messages


async def test_sites_are_the_counters_sites_valid_against_the_national_schema(
    url: str, tmp_path: Path
) -> None:
    rows = await rows_of(url, "comptage-mobilites-sites", "site_id")
    assert [(r["site_id"], r["site_name"], r["xlong"], r["ylat"]) for r in rows] == [
        ("bd", "Boulevard Test", 2.38, 48.84),  # the registry site of cam-a
        ("radar-a", "radar-a", 2.382, 48.842),  # a counter without a site is its own site
    ]
    dataset = CATALOG.get("comptage-mobilites-sites")
    report = validate_csv(tmp_path, "site", render_csv(dataset, rows))
    assert report.valid, errors(report)


async def test_channels_map_classes_directions_and_devices_valid_against_the_schema(
    url: str, tmp_path: Path
) -> None:
    rows = await rows_of(url, "comptage-mobilites-canaux", "channel_id")
    summary = [
        (
            r["channel_id"],
            r["site_id"],
            r["mobility_type"],
            r["counter_type"],
            r["direction"],
            r["provider_direction_code"],
            r["started_at"],
            r["last_updated_at"],
        )
        for r in rows
    ]
    video, radar = "VIDEO SENSOR", "RADAR SENSOR"
    assert summary == [
        ("cam-a-1-in-pedestrian", "bd", "PEDESTRIAN", video, None, "IN", hour(0), hour(4)),
        ("cam-a-1-out-pedestrian", "bd", "PEDESTRIAN", video, None, "OUT", hour(0), hour(4)),
        ("cam-a-2-in-bicycle", "bd", "BIKE", video, None, "IN", hour(0), hour(4)),
        ("cam-a-2-out-bicycle", "bd", "BIKE", video, None, "OUT", hour(0), hour(4)),
        ("radar-a-1-in-car", "radar-a", "CAR", radar, None, "IN", hour(0), hour(2)),
        ("radar-a-1-out-car", "radar-a", "CAR", radar, None, "OUT", hour(0), hour(1)),
    ]
    for row in rows:
        assert row["temporality"] == "PERMANENT"
        assert row["time_step"] == 3600
        assert row["ended_at"] is None
    dataset = CATALOG.get("comptage-mobilites-canaux")
    text = render_csv(dataset, rows)
    report = validate_csv(tmp_path, "channel", text)
    assert report.valid, errors(report)
    # The validation does look at the values: a class name instead of a mobility type fails.
    broken = validate_csv(tmp_path, "channel", text.replace(",PEDESTRIAN,", ",pedestrian,", 1))
    assert not broken.valid
    sites = {r["site_id"] for r in await rows_of(url, "comptage-mobilites-sites", "site_id")}
    assert {r["site_id"] for r in rows} <= sites


async def test_measures_have_every_slot_empty_when_unmeasured_and_zero_when_none_passed(
    url: str, tmp_path: Path
) -> None:
    rows = await rows_of(url, "comptage-mobilites-mesures", "channel_id, start_datetime")
    found: dict[str, list[float | None]] = {}
    for row in rows:
        slots = found.setdefault(row["channel_id"], [])
        # Every slot, in order: the i-th slot of a channel starts i hours after its first.
        assert row["start_datetime"] == hour(len(slots)), row
        assert row["end_datetime"] - row["start_datetime"] == HOUR
        assert row["channel_id"].startswith(f"{row['counter_id']}-")
        slots.append(row["count"])
    assert found == EXPECTED_MEASURES
    channels = await rows_of(url, "comptage-mobilites-canaux", "channel_id")
    assert set(found) == {c["channel_id"] for c in channels}

    dataset = CATALOG.get("comptage-mobilites-mesures")
    text = render_csv(dataset, rows)
    report = validate_csv(tmp_path, "measure", text)
    assert report.valid, errors(report)
    # In the CSV, "no measurement" is an empty cell and "nothing passed" is 0.
    lines = text.splitlines()
    start = hour(1).isoformat()
    assert f"cam-a-1-in-pedestrian,cam-a,{start},{hour(2).isoformat()}," in lines
    assert f"radar-a-1-in-car,radar-a,{start},{hour(2).isoformat()},0.0" in lines


async def test_slots_change_position_only_when_their_count_changes(settings: Settings) -> None:
    """A live reader resumes after (txid, key): every slot a write creates or changes must come
    above the positions already read, and a slot a write leaves as it was must not come again."""
    query = (
        "SELECT start_datetime, count, _change_txid::text::bigint AS txid, _change_key "
        "FROM opendata.mobility_measures WHERE channel_id = 'cam-a-1-in-car' "
        "ORDER BY start_datetime"
    )

    def state(rows: list[dict[str, Any]]) -> list[tuple[float | None, int]]:
        return [(r["count"], r["txid"]) for r in rows]

    def car(i: int, n: int | None, revision: int = 1) -> dict[str, Any]:
        record = hourly("cam-a", i, count(1, "in", "car", n), count(1, "out", "car", 1))
        return {**record, "revision": revision}

    async with (
        opendata_database(settings) as db_url,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        first = await write_windows(conn, [car(0, 1)])
        third = await write_windows(conn, [car(3, 4)])
        rows = await fetch(db_url, query + " LIMIT 4")
        assert state(rows) == [(1, first), (None, third), (None, third), (4, third)]
        position = max((r["txid"], r["_change_key"]) for r in rows)

        async def changed() -> list[datetime]:
            rows = await fetch(db_url, query)
            return [r["start_datetime"] for r in rows if (r["txid"], r["_change_key"]) > position]

        # A late hour fills a gap: only its own slot changes.
        late = await write_windows(conn, [car(1, 2)])
        rows = await fetch(db_url, query + " LIMIT 4")
        assert state(rows) == [(1, first), (2, late), (None, third), (4, third)]
        assert await changed() == [hour(1)]
        # A new revision with the same count changes nothing.
        await write_windows(conn, [car(1, 2, revision=5)])
        assert await changed() == [hour(1)]
        # A revision that no longer counts the channel empties its slot.
        emptied = await write_windows(conn, [{**hourly("cam-a", 1), "revision": 6}])
        rows = await fetch(db_url, query + " LIMIT 4")
        assert state(rows) == [(1, first), (None, emptied), (None, third), (4, third)]
        # An hour before the channel's first brings the empty slots up to it.
        earlier = await write_windows(conn, [car(-3, 0)])
        rows = await fetch(db_url, query + " LIMIT 4")
        assert state(rows) == [(0, earlier), (None, earlier), (None, earlier), (1, first)]


@pytest.mark.parametrize("order", ["reversed", "interleaved"])
async def test_any_arrival_order_gives_the_same_measures(settings: Settings, order: str) -> None:
    records = list(reversed(WINDOWS)) if order == "reversed" else WINDOWS[1::2] + WINDOWS[::2]
    async with (
        opendata_database(settings) as db_url,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        for record in records:
            await write_windows(conn, [record])
        rows = await rows_of(db_url, "comptage-mobilites-mesures", "channel_id, start_datetime")
    found: dict[str, list[float | None]] = {}
    for row in rows:
        found.setdefault(row["channel_id"], []).append(row["count"])
    assert found == EXPECTED_MEASURES


async def test_results_stored_before_the_migration_get_their_slots(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0003 fills the slots of the traffic results already stored (in one pass, not
    through the trigger): the same measures as if they had arrived afterwards."""
    async with fresh_database(settings) as db:
        db_url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:2])
            await migrations.migrate(conn)
            await write_windows(conn, WINDOWS)
            monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
            # 0003, and the migrations after it.
            assert next(m.version for m in await migrations.migrate(conn)) == 3
            await sync_registry(conn, REGISTRY)
        rows = await rows_of(db_url, "comptage-mobilites-mesures", "channel_id, start_datetime")
        channels = await rows_of(db_url, "comptage-mobilites-canaux", "channel_id")
    found: dict[str, list[float | None]] = {}
    for row in rows:
        assert row["start_datetime"] == hour(len(found.setdefault(row["channel_id"], [])))
        found[row["channel_id"]].append(row["count"])
    assert found == EXPECTED_MEASURES
    assert [(c["channel_id"], c["last_updated_at"]) for c in channels][-2:] == [
        ("radar-a-1-in-car", hour(2)),
        ("radar-a-1-out-car", hour(1)),
    ]
