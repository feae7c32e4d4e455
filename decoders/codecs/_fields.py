"""Checks and conversions every binary codec of this package shares.

Decoders: ``check_fport`` (an unknown fPort is the payload of another format), ``check_payload``
(an empty payload decodes to nothing), ``check_consumed`` (a fixed layout with trailing bytes is
another layout). Encoders: ``wire_int`` turns a canonical value into the integer a field carries,
or raises ``ValueError`` when the format cannot hold it; ``check_carried`` refuses quantities the
format does not carry, so that an encoder never drops data silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from decoders._model import InvalidPayloadError, TruncatedError, UnknownFPortError
from decoders._reader import ByteReader

__all__ = ["check_carried", "check_consumed", "check_fport", "check_payload", "wire_int"]


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
