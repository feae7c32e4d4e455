"""Checks, conversions and constructors every binary codec of this package shares.

Decoders: ``decoded``, ``traffic_count`` and ``region_count`` build the output objects without
the dataclass ``__init__`` (see below); ``check_fport`` (an unknown fPort is the payload of another
format), ``check_payload`` (an empty payload decodes to nothing), ``check_consumed`` (a fixed
layout with trailing bytes is another layout). Encoders: ``wire_int`` turns a canonical value into
the integer a field carries, or raises ``ValueError`` when the format cannot hold it;
``check_carried`` refuses quantities the format does not carry, so that an encoder never drops
data silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from decoders._model import (
    Decoded,
    Direction,
    InvalidPayloadError,
    Kind,
    RegionCount,
    TrafficCount,
    TruncatedError,
    UnknownFPortError,
)
from decoders._reader import ByteReader

__all__ = [
    "check_carried",
    "check_consumed",
    "check_fport",
    "check_payload",
    "decoded",
    "region_count",
    "traffic_count",
    "wire_int",
]


# The output dataclasses are compiled too, but mypyc leaves a generated ``__init__`` to the
# dataclasses module: a Python function (``Decoded``'s, with its default factories, cost ~0.45 µs,
# a good part of a whole decode). Compiled, ``decoded`` allocates the object and stores its fields
# directly, ~0.1 µs. ``TrafficCount`` and ``RegionCount`` spell out their ``__init__``, compiled
# too: their helpers just call it.


def decoded(codec: str, kind: Kind) -> Decoded:
    """``Decoded(codec=codec, kind=kind)``: empty values, counts and regions, not partial."""
    out = Decoded.__new__(Decoded)
    out.codec = codec
    out.kind = kind
    out.values = {}
    out.counts = []
    out.regions = []
    out.partial = False
    out.observed_at = None
    out.position = None
    return out


def traffic_count(
    line: int, direction: Direction, traffic_class: str, count: int | None, cumulative: int | None
) -> TrafficCount:
    """``TrafficCount(line, direction, traffic_class, count, cumulative)``."""
    return TrafficCount(line, direction, traffic_class, count, cumulative)


def region_count(region: int, count: int) -> RegionCount:
    """``RegionCount(region, count)``."""
    return RegionCount(region, count)


def check_fport(codec: str, fport: int | None, accepted: tuple[int, ...]) -> None:
    """Raise ``UnknownFPortError`` unless ``fport`` is unknown (None) or one of ``accepted``."""
    if fport is not None and fport not in accepted:
        ports = ", ".join(str(p) for p in accepted)
        raise UnknownFPortError(codec, None, f"unknown fPort {fport} (expected {ports})")


def check_payload(codec: str, payload: bytes) -> None:
    """Raise ``TruncatedError`` for an empty payload: every layout here carries at least a field."""
    if not payload:
        raise TruncatedError(codec, 0, "empty payload")


def check_consumed(reader: ByteReader, layout: str) -> None:
    """Raise ``InvalidPayloadError`` when a fixed-length layout leaves bytes unread."""
    if not reader.at_end():
        raise InvalidPayloadError(
            reader.codec,
            reader.offset,
            f"{reader.remaining} bytes after the end of the {layout}",
        )


def wire_int(name: str, value: float, scale: float, low: int, high: int) -> int:
    """``round(value * scale)``, the integer a field of range ``[low, high]`` carries."""
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number")
    raw = round(value * scale)
    if not low <= raw <= high:
        raise ValueError(
            f"{name}={value!r} does not fit the field (wire value {raw}, range {low}..{high})"
        )
    return raw


def check_carried(
    codec: str, values: Mapping[str, float] | Iterable[str], carried: Callable[[str], bool]
) -> None:
    """Raise ``ValueError`` naming every quantity the format has no field for."""
    extra = sorted(name for name in values if not carried(name))
    if extra:
        raise ValueError(f"{codec} cannot carry {', '.join(extra)}")
