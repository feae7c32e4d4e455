"""Sensor fleet health as bounded metrics: silent and low-battery sensors per kind and site.

docs/architecture.md#observability forbids a per-sensor label (a city has tens of thousands of
sensors, each label value is a time series forever), so per-sensor state stays here, in memory, and
Prometheus sees counts per (kind, site) — sites come from the registry, a bounded set — plus RSSI
and SNR histograms per kind. An operator who sees "3 silent noise sensors at nation" finds which
ones in TimescaleDB (the ``<kind>_latest`` views).

A sensor is silent when nothing arrived from it for ``silence_factor`` of its registry reporting
interval (``interval_s``); three intervals tolerates two lost LoRaWAN uplinks, which a healthy
device in a noisy street loses now and then. Low battery is below 20 %: a project choice (lithium
primary cells hold their voltage until late in discharge, so the reported percentage falls fast
at the end), early enough to plan a round of replacements.

Wiring, kept off ingest's hot path: per accepted measurement ingest only stores the measurement
in :attr:`FleetHealth.heard` under its sensor id (a dict store, nothing allocated); every
``ingest.fleet_refresh_s`` a supervised task (:func:`run_fleet_refresh`) takes those latest
measurements, feeds the RSSI/SNR histograms and the last-seen and battery tables from them, and
recomputes the gauges. A sensor that sent twice within one refresh period has its latest uplink
in the histograms only: with the default 5 s period and registry intervals of a minute or more,
that is every uplink of a healthy fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Gauge, Histogram

from citysense.registry import Registry, Sensor

if TYPE_CHECKING:
    from ingest._router import Accepted

__all__ = [
    "LOW_BATTERY",
    "RSSI",
    "SENSORS",
    "SILENT",
    "SNR",
    "FleetCounts",
    "FleetHealth",
    "fleet_counts",
    "run_fleet_refresh",
]

#: Site label of sensors the registry places nowhere.
NO_SITE = "none"

SENSORS = Gauge(
    "citysense_fleet_sensors",
    "Registered sensors, per kind and site (the denominator of the silent share).",
    ["kind", "site"],
)
SILENT = Gauge(
    "citysense_fleet_silent_sensors",
    "Registered sensors heard from not once in the last 3 of their reporting intervals.",
    ["kind", "site"],
)
LOW_BATTERY = Gauge(
    "citysense_fleet_low_battery_sensors",
    "Registered sensors whose last reported battery_pct is below 20.",
    ["kind", "site"],
)
#: LoRaWAN receive levels: -120 dBm is near the SF12 sensitivity floor, above -70 is strong.
RSSI = Histogram(
    "citysense_fleet_rssi_dbm",
    "Uplink received signal strength at the best gateway, per kind (LoRaWAN uplinks only).",
    ["kind"],
    buckets=(-125, -120, -115, -110, -105, -100, -95, -90, -80, -70, -60),
)
#: LoRa demodulates down to -20 dB SNR at SF12, -7.5 dB at SF7 (Semtech SX1276 datasheet, the
#: spreading factor table).
SNR = Histogram(
    "citysense_fleet_snr_db",
    "Uplink signal-to-noise ratio at the best gateway, per kind (LoRaWAN uplinks only).",
    ["kind"],
    buckets=(-20, -15, -10, -7.5, -5, -2.5, 0, 2.5, 5, 7.5, 10),
)


@dataclass(frozen=True, slots=True)
class FleetCounts:
    sensors: int = 0
    silent: int = 0
    low_battery: int = 0


def fleet_counts(
    sensors: Iterable[Sensor],
    last_seen: Mapping[str, float],
    battery_pct: Mapping[str, float],
    *,
    now: float,
    since: float,
    silence_factor: float = 3.0,
    low_battery_pct: float = 20.0,
) -> dict[tuple[str, str], FleetCounts]:
    """Counts per (kind, site). A sensor not heard from at all counts from ``since`` (start).

    Runs over the whole registry at each refresh (tens of thousands of sensors in a city), on
    ingest's event loop: plain integer counters per key, nothing allocated per sensor.
    """
    totals: dict[tuple[str, str], list[int]] = {}
    for sensor in sensors:
        key = (sensor.kind, sensor.site or NO_SITE)
        row = totals.get(key)
        if row is None:
            row = totals[key] = [0, 0, 0]
        row[0] += 1
        if now - last_seen.get(sensor.id, since) > silence_factor * sensor.interval_s:
            row[1] += 1
        battery = battery_pct.get(sensor.id)
        if battery is not None and battery < low_battery_pct:
            row[2] += 1
    return {key: FleetCounts(*row) for key, row in totals.items()}


class FleetHealth:
    """Per-sensor last-seen and battery, published as the bounded gauges above.

    Hook: ingest stores each accepted measurement in :attr:`heard` (``heard[sensor_id] =
    accepted``) and a periodic task calls :meth:`take_heard` then :meth:`refresh`
    (:func:`run_fleet_refresh`); :meth:`observe` is the same for one measurement's parts.
    """

    def __init__(self, registry: Registry, *, clock: float | None = None) -> None:
        self._registry = registry
        self._since = time.time() if clock is None else clock
        self._last_seen: dict[str, float] = {}
        self._battery: dict[str, float] = {}
        # Histogram children per kind, looked up once: ``labels()`` costs more than ``observe``.
        self._signal: dict[str, tuple[Histogram, Histogram]] = {}
        #: The latest accepted measurement per sensor id since the last :meth:`take_heard`.
        self.heard: dict[str, Accepted] = {}

    def take_heard(self) -> int:
        """Observe the measurements in :attr:`heard` and empty it; returns how many."""
        heard = self.heard
        if not heard:
            return 0
        self.heard = {}
        for sensor_id, accepted in heard.items():
            source = accepted.source
            self.observe(
                sensor_id,
                accepted.decoded.kind,
                received_at=accepted.received_at.timestamp(),
                battery_pct=accepted.decoded.values.get("battery_pct"),
                rssi_dbm=source.rssi,
                snr_db=source.snr,
            )
        return len(heard)

    def observe(
        self,
        sensor_id: str,
        kind: str,
        *,
        received_at: float,
        battery_pct: float | None = None,
        rssi_dbm: float | None = None,
        snr_db: float | None = None,
    ) -> None:
        """Record one measurement; unregistered sensors feed the histograms only."""
        if sensor_id in self._registry.sensors:
            self._last_seen[sensor_id] = received_at
            if battery_pct is not None:
                self._battery[sensor_id] = battery_pct
        if rssi_dbm is None and snr_db is None:
            return
        children = self._signal.get(kind)
        if children is None:
            children = self._signal[kind] = (RSSI.labels(kind), SNR.labels(kind))
        if rssi_dbm is not None:
            children[0].observe(rssi_dbm)
        if snr_db is not None:
            children[1].observe(snr_db)

    def refresh(self, now: float | None = None) -> dict[tuple[str, str], FleetCounts]:
        """Recompute the gauges; returns the counts (for logs and tests)."""
        counts = fleet_counts(
            self._registry.sensors.values(),
            self._last_seen,
            self._battery,
            now=time.time() if now is None else now,
            since=self._since,
        )
        for (kind, site), c in counts.items():
            SENSORS.labels(kind, site).set(c.sensors)
            SILENT.labels(kind, site).set(c.silent)
            LOW_BATTERY.labels(kind, site).set(c.low_battery)
        return counts


async def run_fleet_refresh(fleet: FleetHealth, interval_s: float) -> None:
    """Take what ingest heard and refresh the gauges every ``interval_s``, until cancelled.

    The first refresh is immediate, so ``/metrics`` shows every (kind, site) from the start.
    """
    while True:
        fleet.take_heard()
        fleet.refresh()
        await asyncio.sleep(interval_s)
