"""The canonical decoder output, the decoder error hierarchy and device profiles.

Every decoder turns a vendor payload into :class:`Decoded`; everything downstream speaks only the
canonical measurement of docs/architecture.md#canonical-measurement. ``Decoded`` is the part a
payload can tell by itself (values, counts, regions, a device timestamp when the format carries
one); ingest adds identity, times and network metadata to build the full measurement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal

__all__ = [
    "KINDS",
    "TRAFFIC_CLASSES",
    "DecodeError",
    "Decoded",
    "DeviceProfile",
    "Direction",
    "InvalidPayloadError",
    "Kind",
    "OutOfRangeError",
    "Position",
    "RegionCount",
    "TrafficCount",
    "TruncatedError",
    "UnknownChannelError",
    "UnknownFPortError",
]

Kind = Literal["noise", "air", "traffic", "occupancy"]
KINDS: tuple[Kind, ...] = ("noise", "air", "traffic", "occupancy")
Direction = Literal["in", "out"]
#: Traffic classes of docs/architecture.md#canonical-measurement ("Comptage des mobilités" mobility
#: types map onto them).
TRAFFIC_CLASSES: tuple[str, ...] = (
    "pedestrian",
    "bicycle",
    "two_wheeler",
    "car",
    "bus",
    "truck",
    "unknown",
)


# Plain slots classes, not frozen: a frozen dataclass stores each field through
# ``object.__setattr__`` (to get past its own ``__setattr__``, which raises), a good part of the
# cost of objects built once per message, and the workarounds (writing the slots from outside)
# leaned on CPython's member descriptors and mypyc's attribute layout. Nothing changes one once
# built. The ``__init__`` is spelled out (the dataclass decorator keeps it) so that mypyc compiles
# it; ``__hash__`` too, to stay hashable as the frozen classes were (the decorator would remove
# it from a mutable class).
@dataclass(slots=True)
class TrafficCount:
    """Crossings of one counting line in one direction for one class.

    ``count`` is the number in the device's reporting period (None when the payload only carries
    the cumulative counter); ``cumulative`` is the device's running total (None when absent).
    """

    line: int
    direction: Direction
    traffic_class: str
    count: int | None
    cumulative: int | None

    def __init__(
        self,
        line: int,
        direction: Direction,
        traffic_class: str,
        count: int | None,
        cumulative: int | None,
    ) -> None:
        self.line = line
        self.direction = direction
        self.traffic_class = traffic_class
        self.count = count
        self.cumulative = cumulative

    def __hash__(self) -> int:
        return hash((self.line, self.direction, self.traffic_class, self.count, self.cumulative))


@dataclass(slots=True)
class RegionCount:
    """People counted in one region (1-based), e.g. a pool lane or basin."""

    region: int
    count: int

    def __init__(self, region: int, count: int) -> None:
        self.region = region
        self.count = count

    def __hash__(self) -> int:
        return hash((self.region, self.count))


@dataclass(frozen=True, slots=True)
class Position:
    """Where a mobile device was when it measured: WGS84 (EPSG:4326) degrees.

    ``accuracy_m`` is the radius the source gives for the fix (GNSS horizontal accuracy, a
    network server's location accuracy), None when it gives none. Ranges are checked by ingest
    (latitude within ±90, longitude within ±180), not here: a decoder reports what it read.
    """

    lat: float
    lon: float
    accuracy_m: float | None = None


@dataclass(slots=True)
class Decoded:
    """What a decoder extracts from one payload.

    ``values`` maps canonical quantity names (docs/architecture.md#canonical-measurement, unit as
    suffix) to floats. ``partial`` is True when a TLV stream stopped on an unknown channel: what
    came before it is kept. ``observed_at`` is the device's own timestamp when the format carries
    one (UTC). ``position`` is where the device was, when the payload carries a fix (a GNSS
    channel, ``lat``/``lon`` fields); ingest may fill it from the network server's envelope.
    """

    codec: str
    kind: Kind
    values: dict[str, float] = field(default_factory=dict)
    counts: list[TrafficCount] = field(default_factory=list)
    regions: list[RegionCount] = field(default_factory=list)
    partial: bool = False
    observed_at: datetime | None = None
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Per-device facts from the sensor registry that some formats need to decode.

    - ``calibration``: electrochemical cell constants (Decentlab DL-AC: ``no2_we0_mv``,
      ``no2_sensitivity_mv_per_ppb``, ...).
    - ``line_classes``: traffic class per counting line (1-based) for counters whose payload does
      not carry a class; lines absent here are ``unknown``.
    - ``channel_map``: Cayenne LPP ``<type>_<channel>`` names to canonical quantities
      (``analog_in_3 → laeq_db``).
    """

    calibration: Mapping[str, float] = field(default_factory=dict)
    line_classes: Mapping[int, str] = field(default_factory=dict)
    channel_map: Mapping[str, str] = field(default_factory=dict)

    def traffic_class(self, line: int) -> str:
        return self.line_classes.get(line, "unknown")


EMPTY_PROFILE = DeviceProfile()


class DecodeError(ValueError):
    """A payload this codec cannot decode. The message names the codec, the offset and why.

    Ingest sends the payload to the dead-letter topic with ``reason`` (the subclass's short name)
    and ``str(error)``.
    """

    reason: ClassVar[str] = "invalid"

    def __init__(self, codec: str, offset: int | None, detail: str) -> None:
        self.codec = codec
        self.offset = offset
        self.detail = detail
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{codec}: {detail}{where}")


class TruncatedError(DecodeError):
    """The payload ended before a field the format says is there."""

    reason: ClassVar[str] = "truncated"


class UnknownFPortError(DecodeError):
    """The codec has no layout for this LoRaWAN fPort."""

    reason: ClassVar[str] = "unknown_fport"


class UnknownChannelError(DecodeError):
    """The first channel of a TLV payload is unknown, so nothing could be decoded."""

    reason: ClassVar[str] = "unknown_channel"


class OutOfRangeError(DecodeError):
    """A field holds a value the format or physics rules out."""

    reason: ClassVar[str] = "out_of_range"


class InvalidPayloadError(DecodeError):
    """The payload is not of this format at all (bad header, bad JSON, schema violation)."""

    reason: ClassVar[str] = "invalid"
