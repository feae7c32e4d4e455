"""The sensor registry: which device is which sensor, where it is, and how to decode it.

Loaded from a TOML file (``[[sites]]`` and ``[[sensors]]`` tables) or a CSV file (one row per
sensor, JSON in the ``line_classes``, ``calibration``, ``channel_map`` and ``regions`` columns);
the TimescaleDB ``sensors`` table mirrors it. A sensor's :class:`~decoders.DeviceProfile` carries
the facts some decoders need (calibration, traffic class per line, Cayenne channel map).
"""

from __future__ import annotations

import csv
import json
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from decoders import TRAFFIC_CLASSES, DeviceProfile, Kind, get_codec

__all__ = ["Registry", "RegistryError", "Sensor", "Site", "load_registry", "scenario_path"]

Transport = Literal["direct", "chirpstack", "tts"]


class RegistryError(Exception):
    """The registry file is invalid; the message names the file, the sensor and the field."""


class Site(BaseModel):
    """A place several sensors belong to (a square, a crossing, a pool)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    #: Pools: the maximum number of people allowed in, for percent of capacity.
    capacity: int | None = Field(default=None, ge=1)
    #: Pools: opening hours in local time, e.g. ``["07:00-20:00"]``.
    opening_hours: tuple[str, ...] = ()


class Sensor(BaseModel):
    """One registered device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    kind: Kind
    codec: str
    site: str | None = None
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    #: LoRaWAN device EUI, upper-case hex; None for devices on the direct MQTT topic only.
    dev_eui: str | None = Field(default=None, pattern=r"^[0-9A-F]{16}$")
    #: How the device's uplinks arrive (the simulator publishes the same way).
    transport: Transport = "direct"
    #: The gateway allowed to publish for this sensor on the direct topic (None: any).
    gateway: str | None = None
    #: Occupancy: people allowed in the area the camera covers.
    capacity: int | None = Field(default=None, ge=1)
    #: Traffic: class counted on each line (1-based); unlisted lines are ``unknown``.
    line_classes: dict[int, str] = Field(default_factory=dict)
    #: Occupancy: what each region (1-based) is, e.g. ``{1: "basin-1/lane-1"}``.
    regions: dict[int, str] = Field(default_factory=dict)
    calibration: dict[str, float] = Field(default_factory=dict)
    channel_map: dict[str, str] = Field(default_factory=dict)
    #: Seconds between uplinks; the simulator follows it.
    interval_s: float = Field(default=60.0, gt=0)
    #: A sensor carried by a vehicle (air only): its measurements carry their own position and
    #: feed the gridded map (docs/streams.md#the-grid-stage); ``lat``/``lon`` above are its home
    #: (a depot), never where it measured.
    mobile: bool = False

    @field_validator("dev_eui", mode="before")
    @classmethod
    def _upper_eui(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            get_codec(value)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        return value

    @field_validator("line_classes")
    @classmethod
    def _known_classes(cls, value: dict[int, str]) -> dict[int, str]:
        for line, traffic_class in value.items():
            if traffic_class not in TRAFFIC_CLASSES:
                raise ValueError(f"line {line}: unknown traffic class {traffic_class!r}")
        return value

    @model_validator(mode="after")
    def _codec_reports_kind(self) -> Sensor:
        codec = get_codec(self.codec)
        if self.kind not in codec.kinds:
            raise ValueError(f"codec {self.codec} reports {codec.kinds}, not {self.kind!r}")
        if self.transport != "direct" and self.dev_eui is None:
            raise ValueError(f"transport {self.transport} needs a dev_eui")
        if self.mobile and self.kind != "air":
            raise ValueError(f"only air sensors can be mobile, not {self.kind!r}")
        return self

    def profile(self) -> DeviceProfile:
        return DeviceProfile(
            calibration=self.calibration,
            line_classes=self.line_classes,
            channel_map=self.channel_map,
        )


class Registry:
    """Sensors by id and by device EUI, and sites by id."""

    def __init__(self, sensors: Iterable[Sensor], sites: Iterable[Site] = ()) -> None:
        self.sites: dict[str, Site] = {}
        for site in sites:
            if site.id in self.sites:
                raise RegistryError(f"site {site.id!r} defined twice")
            self.sites[site.id] = site
        self.sensors: dict[str, Sensor] = {}
        self.by_dev_eui: dict[str, Sensor] = {}
        for sensor in sensors:
            if sensor.id in self.sensors:
                raise RegistryError(f"sensor {sensor.id!r} defined twice")
            if sensor.site is not None and sensor.site not in self.sites and self.sites:
                raise RegistryError(f"sensor {sensor.id!r}: unknown site {sensor.site!r}")
            if sensor.dev_eui is not None:
                if sensor.dev_eui in self.by_dev_eui:
                    raise RegistryError(f"sensor {sensor.id!r}: dev_eui {sensor.dev_eui} reused")
                self.by_dev_eui[sensor.dev_eui] = sensor
            self.sensors[sensor.id] = sensor
        self._profiles = {s.id: s.profile() for s in self.sensors.values()}

    def __len__(self) -> int:
        return len(self.sensors)

    def get(self, sensor_id: str) -> Sensor | None:
        return self.sensors.get(sensor_id)

    def profile(self, sensor_id: str) -> DeviceProfile:
        return self._profiles[sensor_id]

    def of_kind(self, kind: Kind) -> list[Sensor]:
        return [s for s in self.sensors.values() if s.kind == kind]


def _validation_message(source: str, where: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
    )
    return f"{source}: {where}: {problems}"


def _build(source: str, sites: list[Any], sensors: list[Any]) -> Registry:
    parsed_sites: list[Site] = []
    for index, raw in enumerate(sites):
        try:
            parsed_sites.append(Site.model_validate(raw))
        except ValidationError as exc:
            name = raw.get("id", index) if isinstance(raw, Mapping) else index
            raise RegistryError(_validation_message(source, f"site {name}", exc)) from None
    parsed: list[Sensor] = []
    for index, raw in enumerate(sensors):
        try:
            parsed.append(Sensor.model_validate(raw))
        except ValidationError as exc:
            name = raw.get("id", index) if isinstance(raw, Mapping) else index
            raise RegistryError(_validation_message(source, f"sensor {name}", exc)) from None
    try:
        return Registry(parsed, parsed_sites)
    except RegistryError as exc:
        raise RegistryError(f"{source}: {exc}") from None


_CSV_JSON_COLUMNS = ("line_classes", "regions", "calibration", "channel_map")


def load_registry(path: Path) -> Registry:
    """The registry in ``path`` (``.toml`` or ``.csv``); ``RegistryError`` naming what is wrong."""
    if not path.is_file():
        raise RegistryError(f"{path}: no such registry file")
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{path}: {exc}") from None
        return _build(str(path), data.get("sites", []), data.get("sensors", []))
    if path.suffix == ".csv":
        rows: list[dict[str, Any]] = []
        with path.open(newline="") as handle:
            for line_no, row in enumerate(csv.DictReader(handle), start=2):
                cleaned: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
                for column in _CSV_JSON_COLUMNS:
                    if column in cleaned:
                        try:
                            cleaned[column] = json.loads(cleaned[column])
                        except json.JSONDecodeError as exc:
                            raise RegistryError(f"{path}:{line_no}: {column}: {exc}") from None
                rows.append(cleaned)
        return _build(str(path), [], rows)
    raise RegistryError(f"{path}: registry files are .toml or .csv")


def scenario_path(name: str) -> Path:
    """The shipped scenario file ``citysense/scenarios/<name>.toml``."""
    path = Path(str(resources.files("citysense") / "scenarios" / f"{name}.toml"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        raise RegistryError(f"unknown scenario {name!r} (known: {', '.join(known)})")
    return path
