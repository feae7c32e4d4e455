"""The built-in catalogue's metadata and the ``publish.datasets_file`` loader (no database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citysense.settings import PublishSettings
from sinks.opendata._catalog import LICENCES, Dataset
from sinks.opendata._datasets import (
    BUILTIN_DATASETS,
    DatasetsFileError,
    default_catalog,
    load_datasets_file,
)

NATIONAL_SCHEMAS = Path(__file__).parent / "comptage_mobilites"

#: The spec of the publication (dataset id → view, live) that the views and the live feed share.
EXPECTED = {
    "bruit-horaire": ("noise_hourly", True),
    "bruit-lden-journalier": ("noise_daily", False),
    "qualite-air-horaire": ("air_hourly", True),
    "qualite-air-carte-pm25": ("air_cells_pm25", True),
    "comptage-mobilites-sites": ("mobility_sites", False),
    "comptage-mobilites-canaux": ("mobility_channels", False),
    "comptage-mobilites-mesures": ("mobility_measures", True),
    "comptage-horaire-par-mode": ("counts_hourly", True),
    "affluence-piscine-15min": ("pool_15min", True),
    "affluence-piscine-temps-reel": ("pool_now", True),
}

#: Table Schema types → the portal's (a national "number" may hold decimals: double).
TABLE_SCHEMA_TYPES = {"string": "text", "number": "double", "datetime": "datetime"}


def test_the_builtin_catalogue_has_the_published_datasets_with_their_views() -> None:
    catalog = default_catalog(PublishSettings())
    assert {d.id: (d.view, d.live) for d in catalog} == EXPECTED
    for dataset in catalog:
        assert dataset.title.fr
        assert dataset.title.en
        assert dataset.title.fr != dataset.title.en
        assert dataset.description.fr
        assert dataset.description.en
        assert dataset.keywords
        assert dataset.licence is None or dataset.licence in LICENCES
        assert dataset.key_fields, dataset.id
        for field in dataset.fields:
            assert field.label.fr, (dataset.id, field.name)
            assert field.label.en, (dataset.id, field.name)


def test_every_dataset_with_a_position_names_it_and_hourly_ones_are_ordered_by_start() -> None:
    for dataset in BUILTIN_DATASETS:
        has_point = "geo_point_2d" in dataset.field_types
        assert (dataset.geo_field == "geo_point_2d") == has_point, dataset.id
        if {"start_time", "end_time"} <= set(dataset.field_types):
            assert dataset.timestamp_field == "start_time"
            assert dataset.field_types["start_time"] == "datetime"


def test_levels_are_in_dba_and_concentrations_in_ugm3() -> None:
    for dataset in BUILTIN_DATASETS:
        for field in dataset.fields:
            if field.name.endswith("_db"):
                assert (field.type, field.unit) == ("double", "dB(A)"), field.name
            if field.name.endswith("_ugm3"):
                assert (field.type, field.unit) == ("double", "µg/m³"), field.name


@pytest.mark.parametrize(
    ("dataset_id", "schema"),
    [
        ("comptage-mobilites-sites", "site"),
        ("comptage-mobilites-canaux", "channel"),
        ("comptage-mobilites-mesures", "measure"),
    ],
)
def test_comptage_datasets_have_exactly_the_national_schema_fields(
    dataset_id: str, schema: str
) -> None:
    national = json.loads((NATIONAL_SCHEMAS / schema / "schema.json").read_text())
    expected = [(f["name"], TABLE_SCHEMA_TYPES[f["type"]]) for f in national["fields"]]
    dataset = default_catalog(PublishSettings()).get(dataset_id)
    assert [(f.name, f.type) for f in dataset.fields] == expected


# --- datasets_file ---------------------------------------------------------------------------

_VALID = """
[[datasets]]
id = "bruit-nuit"
view = "noise_hourly"
title = { fr = "Bruit la nuit", en = "Noise at night" }
description = { fr = "Niveaux nocturnes", en = "Night levels" }
keywords = ["bruit"]
frequency = "DAILY"
timestamp_field = "start_time"
key_fields = ["sensor_id", "start_time"]
licence = "odbl-1.0"

[[datasets.fields]]
name = "sensor_id"
type = "text"
label = { fr = "Capteur", en = "Sensor" }

[[datasets.fields]]
name = "start_time"
type = "datetime"
label = { fr = "Début", en = "Start" }

[[datasets.fields]]
name = "laeq_db"
type = "double"
label = { fr = "LAeq", en = "LAeq" }
unit = "dB(A)"

[[datasets]]
id = "piscine"
view = "pool_now"
title = { fr = "Piscine", en = "Pool" }
description = { fr = "Maintenant", en = "Now" }
live = true

[[datasets.fields]]
name = "site_id"
type = "text"
label = { fr = "Site", en = "Site" }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "datasets.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_datasets_file_replaces_the_builtin_catalogue(tmp_path: Path) -> None:
    path = _write(tmp_path, _VALID)
    catalog = default_catalog(PublishSettings(datasets_file=path))
    assert [d.id for d in catalog] == ["bruit-nuit", "piscine"]
    night = catalog.get("bruit-nuit")
    assert night.view == "noise_hourly"
    assert night.title.get("en") == "Noise at night"
    assert night.licence == "odbl-1.0"
    assert night.field("laeq_db").unit == "dB(A)"
    assert night.key_fields == ("sensor_id", "start_time")
    assert catalog.get("piscine").live
    assert load_datasets_file(path) == tuple(catalog)


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(DatasetsFileError) as caught:
        load_datasets_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_a_bad_field_type_names_the_file_the_dataset_and_the_field(tmp_path: Path) -> None:
    message = _error(tmp_path, _VALID.replace('type = "double"', 'type = "float"'))
    assert "dataset 'bruit-nuit'" in message
    assert "field 'laeq_db'" in message
    assert "type" in message


def test_a_field_without_a_name_is_named_by_its_position(tmp_path: Path) -> None:
    message = _error(tmp_path, _VALID.replace('name = "start_time"\n', ""))
    assert "dataset 'bruit-nuit'" in message
    assert "field #2: name" in message


def test_a_misspelt_dataset_key_is_an_error_naming_it(tmp_path: Path) -> None:
    message = _error(tmp_path, _VALID.replace("live = true", "lvie = true"))
    assert "dataset 'piscine'" in message
    assert "lvie" in message


def test_a_timestamp_field_that_is_not_a_field_is_an_error(tmp_path: Path) -> None:
    message = _error(
        tmp_path, _VALID.replace('timestamp_field = "start_time"', 'timestamp_field = "start"')
    )
    assert "dataset 'bruit-nuit'" in message
    assert "'start' is not a field" in message


def test_a_dataset_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    message = _error(tmp_path, _VALID.replace('id = "piscine"\n', ""))
    assert "dataset #2" in message
    assert "id" in message


def test_a_dataset_defined_twice_is_an_error(tmp_path: Path) -> None:
    message = _error(tmp_path, _VALID.replace('id = "piscine"', 'id = "bruit-nuit"'))
    assert "dataset 'bruit-nuit' is defined twice" in message


def test_an_invalid_dataset_id_or_view_name_is_an_error(tmp_path: Path) -> None:
    message = _error(tmp_path, _VALID.replace('view = "pool_now"', 'view = "pool_now; DROP"'))
    assert "dataset 'piscine'" in message
    assert "view" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no [[datasets]] table"),
        ("datasets = []", "no [[datasets]] table"),
        ("[[dataset]]\nid = 'x'", "unknown top-level key(s) dataset"),
        ("[[datasets]\nid = 'x'", "not valid TOML"),
        ("datasets = [1]", "dataset #1: must be a table"),
    ],
)
def test_a_file_of_the_wrong_shape_says_what_is_wrong(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _error(tmp_path, text)


def test_a_missing_datasets_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(DatasetsFileError, match="no such datasets file"):
        default_catalog(PublishSettings(datasets_file=path))


def test_the_builtin_datasets_are_valid_models_round_trip() -> None:
    """What the built-in list holds survives a dump and a validation, as a file would give it."""
    for dataset in BUILTIN_DATASETS:
        assert Dataset.model_validate(dataset.model_dump()) == dataset
