"""citysense JSON: our own format for gateways and edge devices that already compute values.

A UTF-8 JSON object, validated by :class:`CitysenseMessage` (unknown fields are rejected)::

    {"kind": "noise",                          # noise | air | traffic | occupancy
     "observed_at": "2026-01-01T00:00:00Z",    # optional, ISO 8601 with an offset
     "values": {"laeq_db": 61.2},              # quantity → number
     "counts": [{"line": 1, "direction": "in", "class": "bicycle",
                 "count": 12, "cumulative": 3456}],   # traffic only
     "regions": [{"region": 1, "count": 7}],          # occupancy only
     "lat": 48.8566, "lon": 2.3522,            # air only: a mobile sensor's fix, WGS84 degrees
     "position_accuracy_m": 5.0}               # optional, with lat and lon

Rules: quantity names are lower snake case ending in a unit suffix from :data:`UNIT_SUFFIXES`
(docs/architecture.md#quantity-names: ``laeq_db``, ``pm2_5_ugm3``, ``temperature_c``); values are
finite JSON numbers (not strings or booleans); ``observed_at`` must carry a UTC offset and is
returned in UTC (digits beyond microseconds are truncated); ``class`` is one of the traffic classes;
a count needs ``count`` or ``cumulative``; ``counts`` only with kind traffic, ``regions`` only with
occupancy; ``lat`` and ``lon`` come together, within ±90 and ±180 degrees, only with kind air,
and ``position_accuracy_m`` (≥ 0) only with them: they become the measurement's ``position``; a
message must carry at least one value, count or region. Any JSON or validation error is
an ``InvalidPayloadError`` with pydantic's messages. Accepted on any fPort (usually it arrives on a
raw MQTT topic with none); the encoder uses fPort 1.

Speed: validating with pydantic cost ~5 µs per message, most of a decode. ``_citysense_fast``
takes the well-formed messages of the common shapes straight to the ``Decoded`` the model would
give; anything it is not sure of (an unusual shape, a new name, any error) goes through the model,
so what is accepted and the error messages do not change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from decoders._model import (
    TRAFFIC_CLASSES,
    Decoded,
    DeviceProfile,
    InvalidPayloadError,
    Kind,
    OutOfRangeError,
    Position,
    RegionCount,
    TrafficCount,
)
from decoders._registry import Codec, register
from decoders.codecs._citysense_fast import fast_decode, remember_names

__all__ = ["CODEC", "UNIT_SUFFIXES", "CitysenseMessage", "decode", "encode"]

NAME = "citysense-json"
ENCODE_FPORT = 1
#: Unit suffixes a quantity name may end with; extend here when a new unit is needed.
UNIT_SUFFIXES = (
    "db", "ugm3", "mgm3", "ppm", "ppb", "per_cm3", "c", "pct", "hpa", "pa", "v", "mv", "ma",
    "w", "mw", "wh", "kwh", "lux", "nm", "um", "mm", "m", "km", "s", "ms", "hz", "kmh", "mps",
    "deg",
)  # fmt: skip
QUANTITY_PATTERN = rf"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:{'|'.join(UNIT_SUFFIXES)})$"

_Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Natural = Annotated[StrictInt, Field(ge=0)]
_Positive = Annotated[StrictInt, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CountIn(_Model):
    line: _Positive
    direction: Literal["in", "out"]
    traffic_class: str = Field(alias="class")
    count: _Natural | None = None
    cumulative: _Natural | None = None

    @field_validator("traffic_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        if value not in TRAFFIC_CLASSES:
            raise ValueError(f"class must be one of {', '.join(TRAFFIC_CLASSES)}")
        return value

    @model_validator(mode="after")
    def _has_a_count(self) -> CountIn:
        if self.count is None and self.cumulative is None:
            raise ValueError("a count needs count or cumulative")
        return self


class RegionIn(_Model):
    region: _Positive
    count: _Natural


class CitysenseMessage(_Model):
    """The JSON payload; see the module docstring for the rules."""

    kind: Kind
    observed_at: AwareDatetime | None = None
    values: dict[_Quantity, _Number] = Field(default_factory=dict)
    counts: list[CountIn] = Field(default_factory=list)
    regions: list[RegionIn] = Field(default_factory=list)
    lat: Annotated[_Number, Field(ge=-90, le=90)] | None = None
    lon: Annotated[_Number, Field(ge=-180, le=180)] | None = None
    position_accuracy_m: Annotated[_Number, Field(ge=0)] | None = None

    @field_validator("observed_at", mode="before")
    @classmethod
    def _iso_string(cls, value: object) -> object:
        # pydantic would also take a number as Unix time; the format says ISO 8601 only.
        if value is not None and not isinstance(value, str):
            raise ValueError("observed_at must be an ISO 8601 string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CitysenseMessage:
        if self.counts and self.kind != "traffic":
            raise ValueError("counts are only allowed with kind traffic")
        if self.regions and self.kind != "occupancy":
            raise ValueError("regions are only allowed with kind occupancy")
        if not (self.values or self.counts or self.regions):
            raise ValueError("a message needs values, counts or regions")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon come together")
        if self.position_accuracy_m is not None and self.lat is None:
            raise ValueError("position_accuracy_m needs lat and lon")
        if self.lat is not None and self.kind != "air":
            raise ValueError("a position (lat, lon) is only allowed with kind air")
        return self


def _validation_detail(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'message'}: {e['msg']}"
        for e in error.errors(include_url=False)
    )


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Validate a citysense JSON payload and return it as ``Decoded``."""
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayloadError(NAME, None, f"invalid JSON: {exc}") from exc
    fast = fast_decode(raw)
    return fast if fast is not None else _validated(raw)


def _validated(raw: Any) -> Decoded:
    """The message through the full model: its rules, its error messages."""
    try:
        message = CitysenseMessage.model_validate(raw)
    except ValidationError as exc:
        raise InvalidPayloadError(NAME, None, _validation_detail(exc)) from exc
    remember_names(message.values)
    observed_at = None
    if message.observed_at is not None:
        try:
            observed_at = message.observed_at.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00:00+01:00 is a valid ISO 8601 time with no UTC datetime.
            raise OutOfRangeError(
                NAME, None, f"observed_at {message.observed_at.isoformat()} is not a time in UTC"
            ) from None
    return Decoded(
        codec=NAME,
        kind=message.kind,
        values=dict(message.values),
        counts=[
            TrafficCount(c.line, c.direction, c.traffic_class, c.count, c.cumulative)
            for c in message.counts
        ],
        regions=[RegionCount(r.region, r.count) for r in message.regions],
        observed_at=observed_at,
        position=(
            None
            if message.lat is None or message.lon is None
            else Position(message.lat, message.lon, message.position_accuracy_m)
        ),
    )


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """Serialise ``decoded``; ValueError (pydantic's) when it breaks the format's rules."""
    if decoded.partial:
        raise ValueError(f"{NAME} has no partial messages")
    body: dict[str, Any] = {"kind": decoded.kind, "values": decoded.values}
    if decoded.observed_at is not None:
        body["observed_at"] = _iso_utc(decoded.observed_at)
    if decoded.counts:
        body["counts"] = [
            {
                "line": c.line,
                "direction": c.direction,
                "class": c.traffic_class,
                "count": c.count,
                "cumulative": c.cumulative,
            }
            for c in decoded.counts
        ]
    if decoded.regions:
        body["regions"] = [{"region": r.region, "count": r.count} for r in decoded.regions]
    if decoded.position is not None:
        body["lat"] = decoded.position.lat
        body["lon"] = decoded.position.lon
        if decoded.position.accuracy_m is not None:
            body["position_accuracy_m"] = decoded.position.accuracy_m
    CitysenseMessage.model_validate(body)  # the encoder never writes what decode would reject
    return ENCODE_FPORT, orjson.dumps(body)


def _iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{NAME}: observed_at {moment!r} has no timezone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


CODEC = register(
    Codec(
        name=NAME,
        kinds=("noise", "air", "traffic", "occupancy"),
        fports=(),
        decode_fn=decode,
        encode_fn=encode,
        description="citysense JSON for gateways that already compute canonical values",
    )
)
