"""Fleet health: silent and low-battery sensors counted per kind and site, no sensor label."""

from __future__ import annotations

from prometheus_client import REGISTRY

from citysense.registry import Registry, Sensor, Site
from ingest._fleet import FleetHealth, fleet_counts


def sensor(
    sid: str, kind: str = "noise", site: str | None = "nation", interval: float = 60
) -> Sensor:
    codec = {"noise": "citysense-json", "air": "citysense-json"}[kind]
    return Sensor(
        id=sid, kind=kind, codec=codec, site=site, lat=48.85, lon=2.39, interval_s=interval
    )


def registry() -> Registry:
    return Registry(
        [
            sensor("n1"),
            sensor("n2"),
            sensor("n3", interval=600),
            sensor("a1", kind="air"),
            sensor("x1", site=None),
        ],
        [Site(id="nation", name="Place de la Nation", lat=48.85, lon=2.39)],
    )


def test_silent_means_three_intervals_without_a_message() -> None:
    reg = registry()
    # t=0 start; n1 heard at 900 (100 s ago at 1000: fine), n2 heard at 790 (210 s > 180 s:
    # silent), n3 every 600 s, heard at 0 (1000 s < 1800 s: fine), a1 never heard (1000 s since
    # start > 180 s: silent), x1 never heard either and has no site.
    counts = fleet_counts(
        reg.sensors.values(),
        {"n1": 900.0, "n2": 790.0, "n3": 0.0},
        {"n1": 15.0, "n2": 80.0},
        now=1000.0,
        since=0.0,
    )
    assert counts[("noise", "nation")].sensors == 3
    assert counts[("noise", "nation")].silent == 1
    assert counts[("noise", "nation")].low_battery == 1
    assert counts[("air", "nation")].silent == 1
    assert counts[("noise", "none")].silent == 1
    # Just after start nothing is silent yet: a sensor gets its three intervals.
    fresh = fleet_counts(reg.sensors.values(), {}, {}, now=170.0, since=0.0)
    assert sum(c.silent for c in fresh.values()) == 0


def test_gauges_and_histograms_carry_no_sensor_label() -> None:
    fleet = FleetHealth(registry(), clock=0.0)
    fleet.observe("n1", "noise", received_at=950.0, battery_pct=10.0, rssi_dbm=-97.0, snr_db=-3.0)
    fleet.observe("unregistered:ABCD", "noise", received_at=950.0, rssi_dbm=-97.0)
    fleet.refresh(now=1000.0)
    value = REGISTRY.get_sample_value
    assert value("citysense_fleet_sensors", {"kind": "noise", "site": "nation"}) == 3
    # n2 and n3 never heard: n2 (60 s interval) silent, n3 (600 s) not yet.
    assert value("citysense_fleet_silent_sensors", {"kind": "noise", "site": "nation"}) == 1
    assert value("citysense_fleet_low_battery_sensors", {"kind": "noise", "site": "nation"}) == 1
    # -97 dBm falls in the (-100, -95] bucket; both uplinks are observed, registered or not.
    before = value("citysense_fleet_rssi_dbm_bucket", {"kind": "noise", "le": "-100.0"}) or 0
    at = value("citysense_fleet_rssi_dbm_bucket", {"kind": "noise", "le": "-95.0"})
    assert at is not None
    assert at - before >= 2
    for metric in REGISTRY.collect():
        if metric.name.startswith("citysense_fleet"):
            for sample in metric.samples:
                assert "sensor_id" not in sample.labels
                assert "n1" not in sample.labels.values()
