"""citysense JSON: our own format for gateways and edge devices that already compute values.

A UTF-8 JSON object, validated by :class:`CitysenseMessage` (unknown fields are rejected)::

    {"kind": "noise",                          # noise | air | traffic | occupancy
     "observed_at": "2026-01-01T00:00:00Z",    # optional, ISO 8601 with an offset
     "values": {"laeq_db": 61.2},              # quantity → number
     "counts": [{"line": 1, "direction": "in", "class": "bicycle",
                 "count": 12, "cumulative": 3456}],   # traffic only
     "regions": [{"region": 1, "count": 7}]}          # occupancy only

Rules: quantity names are lower snake case ending in a unit suffix from :data:`UNIT_SUFFIXES`
(DESIGN.md section 3: ``laeq_db``, ``pm2_5_ugm3``, ``temperature_c``); values are finite JSON
numbers (not strings or booleans); ``observed_at`` must carry a UTC offset and is returned in UTC
(digits beyond microseconds are truncated); ``class`` is one of the traffic classes; a count needs
``count`` or ``cumulative``; ``counts`` only with kind traffic, ``regions`` only with occupancy;
a message must carry at least one value, count or region. Any JSON or validation error is an
``InvalidPayloadError`` with pydantic's messages. Accepted on any fPort (usually it arrives on a
raw MQTT topic with none); the encoder uses fPort 1.

Speed: validating with pydantic cost ~5 µs per message, most of a decode. ``_fast_decode`` takes
the well-formed messages of the common shapes (plain JSON types, value names the model has
already accepted, a canonical ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`` timestamp) straight to
``Decoded``, the same one the model would give; anything it is not sure of (an unusual shape, a
new name, any error) goes through the model, so what is accepted and the error messages do not
change.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeGuard

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
    KINDS,
    TRAFFIC_CLASSES,
    Decoded,
    DeviceProfile,
    Direction,
    InvalidPayloadError,
    Kind,
    RegionCount,
    TrafficCount,
)
from decoders._registry import Codec, register
from decoders.codecs._fields import decoded, region_count, traffic_count

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
    fast = _fast_decode(raw)
    return fast if fast is not None else _validated(raw)


def _validated(raw: Any) -> Decoded:
    """The message through the full model: its rules, its error messages."""
    try:
        message = CitysenseMessage.model_validate(raw)
    except ValidationError as exc:
        raise InvalidPayloadError(NAME, None, _validation_detail(exc)) from exc
    if len(_KNOWN_NAMES) > _KNOWN_NAMES_MAX:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES.update(message.values)
    return Decoded(
        codec=NAME,
        kind=message.kind,
        values=dict(message.values),
        counts=[
            TrafficCount(c.line, c.direction, c.traffic_class, c.count, c.cumulative)
            for c in message.counts
        ],
        regions=[RegionCount(r.region, r.count) for r in message.regions],
        observed_at=message.observed_at.astimezone(UTC) if message.observed_at else None,
    )


# --- the fast path: returns what _validated would, or None when unsure ---------------------------

#: Quantity names the model has accepted (a name's validity depends on nothing else), so that
#: the fast path never re-implements the name pattern; bounded, refilled by later messages.
_KNOWN_NAMES: set[str] = set()
_KNOWN_NAMES_MAX = 10_000
_MESSAGE_KEYS = frozenset({"kind", "observed_at", "values", "counts", "regions"})
_COUNT_KEYS = frozenset({"line", "direction", "class", "count", "cumulative"})
_REGION_KEYS = frozenset({"region", "count"})
#: Integers the fast path takes: where JSON, Python and pydantic's numbers surely agree.
_EXACT = 2**53
_ISO_UTC = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])",
    re.ASCII,
)


def _fast_decode(raw: object) -> Decoded | None:
    if type(raw) is not dict or not _MESSAGE_KEYS.issuperset(raw):
        return None
    kind = raw.get("kind")
    if kind not in KINDS:  # also rules out non-strings
        return None
    values = _fast_values(raw["values"]) if "values" in raw else {}
    counts = _fast_counts(raw["counts"]) if "counts" in raw else []
    regions = _fast_regions(raw["regions"]) if "regions" in raw else []
    if values is None or counts is None or regions is None:
        return None
    if (counts and kind != "traffic") or (regions and kind != "occupancy"):
        return None
    if not (values or counts or regions):
        return None
    out = decoded(NAME, kind)
    out.values = values
    out.counts = counts
    out.regions = regions
    observed_at = raw.get("observed_at")
    if observed_at is not None:
        if type(observed_at) is not str or not _ISO_UTC.fullmatch(observed_at):
            return None
        try:
            moment = datetime.fromisoformat(observed_at)
        except ValueError:
            return None
        out.observed_at = moment.astimezone(UTC)
    return out


def _fast_values(raw: object) -> dict[str, float] | None:
    if type(raw) is not dict:
        return None
    values: dict[str, float] = {}
    for name, value in raw.items():
        if name not in _KNOWN_NAMES:
            return None
        if type(value) is float:
            if not math.isfinite(value):
                return None
            values[name] = value
        elif type(value) is int and -_EXACT < value < _EXACT:
            values[name] = float(value)
        else:
            return None
    return values


def _natural(value: object, low: int) -> TypeGuard[int]:
    return type(value) is int and low <= value < _EXACT


def _direction(value: object) -> TypeGuard[Direction]:
    return type(value) is str and value in ("in", "out")


def _fast_counts(raw: object) -> list[TrafficCount] | None:
    if type(raw) is not list:
        return None
    counts: list[TrafficCount] = []
    for item in raw:
        if type(item) is not dict or not _COUNT_KEYS.issuperset(item):
            return None
        line, direction, traffic_class = item.get("line"), item.get("direction"), item.get("class")
        count, cumulative = item.get("count"), item.get("cumulative")
        if not (_natural(line, 1) and _direction(direction)):
            return None
        if type(traffic_class) is not str or traffic_class not in TRAFFIC_CLASSES:
            return None
        if count is None and cumulative is None:
            return None
        if not (
            (count is None or _natural(count, 0))
            and (cumulative is None or _natural(cumulative, 0))
        ):
            return None
        counts.append(traffic_count(line, direction, traffic_class, count, cumulative))
    return counts


def _fast_regions(raw: object) -> list[RegionCount] | None:
    if type(raw) is not list:
        return None
    regions: list[RegionCount] = []
    for item in raw:
        if type(item) is not dict or item.keys() != _REGION_KEYS:
            return None
        region, count = item["region"], item["count"]
        if not (_natural(region, 1) and _natural(count, 0)):
            return None
        regions.append(region_count(region, count))
    return regions


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
