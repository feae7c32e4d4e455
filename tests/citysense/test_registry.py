"""The sensor registry: TOML and CSV files, the shipped scenario, errors naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from citysense.registry import RegistryError, load_registry, scenario_path


def test_nation_scenario_has_the_reference_fleet() -> None:
    registry = load_registry(scenario_path("nation"))
    counts = {k: len(registry.of_kind(k)) for k in ("noise", "air", "traffic", "occupancy")}
    assert counts["noise"] == 20
    assert counts["air"] == 10
    assert counts["traffic"] == 6
    pool_lanes = [
        lane
        for sensor in registry.of_kind("occupancy")
        for lane in sensor.regions.values()
        if lane.startswith("basin-")
    ]
    assert {lane.split("/")[0] for lane in pool_lanes} == {"basin-1", "basin-2"}
    assert all(
        4 <= sum(1 for x in pool_lanes if x.startswith(b)) <= 6 for b in ("basin-1", "basin-2")
    )
    classes = {c for s in registry.of_kind("traffic") for c in s.line_classes.values()}
    assert {"pedestrian", "bicycle", "car"} <= classes
    calibrated = [s for s in registry.of_kind("air") if s.codec == "decentlab-dl-ac"]
    assert calibrated
    assert all("no2_sensitivity_mv_per_ppb" in s.calibration for s in calibrated)
    assert registry.sites["piscine-nation"].capacity == 250
    for sensor in registry.sensors.values():
        if sensor.dev_eui:
            assert registry.by_dev_eui[sensor.dev_eui] is sensor


def test_csv_registry(tmp_path: Path) -> None:
    path = tmp_path / "sensors.csv"
    path.write_text(
        "id,kind,codec,lat,lon,dev_eui,transport,line_classes\n"
        "cam-1,traffic,milesight-vs133,48.85,2.39,24e124136b502217,chirpstack,"
        '"{""1"": ""bicycle""}"\n'
        "meter-1,noise,milesight-ws302,48.85,2.39,,direct,\n"
    )
    registry = load_registry(path)
    camera = registry.by_dev_eui["24E124136B502217"]
    assert camera.profile().traffic_class(1) == "bicycle"
    assert camera.profile().traffic_class(2) == "unknown"
    assert registry.get("meter-1") is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[[sensors]]\nid = "a"\nkind = "noise"\ncodec = "nope"\nlat = 1\nlon = 2\n',
            "sensor a: codec",
        ),
        (
            '[[sensors]]\nid = "a"\nkind = "air"\ncodec = "milesight-ws302"\nlat = 1\nlon = 2\n',
            "reports",
        ),
        (
            '[[sensors]]\nid = "a"\nkind = "noise"\ncodec = "milesight-ws302"\n'
            "lat = 100\nlon = 2\n",
            "lat",
        ),
        (
            '[[sensors]]\nid = "a"\nkind = "traffic"\ncodec = "milesight-vs133"\nlat = 1\nlon = 2\n'
            'line_classes = { "1" = "tram" }\n',
            "tram",
        ),
        (
            '[[sensors]]\nid = "a"\nkind = "noise"\ncodec = "milesight-ws302"\nlat = 1\nlon = 2\n'
            'transport = "tts"\n',
            "dev_eui",
        ),
        (
            '[[sensors]]\nid = "a"\nkind = "noise"\ncodec = "milesight-ws302"\nlat = 1\nlon = 2\n'
            '[[sensors]]\nid = "a"\nkind = "noise"\ncodec = "milesight-ws302"\nlat = 1\nlon = 2\n',
            "defined twice",
        ),
        ("[[sensors]\n", "registry.toml"),
    ],
)
def test_invalid_registry_names_the_problem(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(body)
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_unknown_scenario_lists_known_ones() -> None:
    with pytest.raises(RegistryError, match="nation"):
        scenario_path("atlantis")
