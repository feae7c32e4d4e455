"""Parametric PCR2 radar traffic counter, application payload version 4.

Source: Parametric's decoder ``vendor/parametric/pcr2.js`` (``decode_extended_v4``) and its example
in ``vendor/parametric/pcr2-codec.yaml`` (TheThingsNetwork/lorawan-devices);
docs/payload-formats.md#parametric-pcr2. fPort 14, exactly 17 bytes, big-endian:

| bytes | content |
|---|---|
| 0-2 | ``be 01 04``: vendor, device family, payload version 4 |
| 3-4 | left-to-right count this period, u16 |
| 5-6 | right-to-left count this period, u16 |
| 7-8 | left-to-right count since power-up, u16 |
| 9-10 | right-to-left count since power-up, u16 |
| 11-12 | battery, mV u16 (SBX solar charger) |
| 13-14 | solar panel power, mW u16 (SBX solar charger) |
| 15-16 | CPU temperature, signed /10 °C |

The radar watches one line: left-to-right is line 1 direction ``in``, right-to-left is ``out``;
each direction gives one ``TrafficCount`` with the period count and the since-power-up total
(which wraps at 65536 and restarts on reboot). The payload has no class, so it comes from the
registry (``profile.traffic_class(1)``). Values: ``battery_v``, ``solar_power_mw`` and
``board_temperature_c``; the vendor floors the temperature to whole degrees, we keep the 0.1 °C.
The older 16-byte version 3 (battery as a 1-byte gauge) and the Elsys-style and configuration
payloads (fPort 190) are not decoded.
"""

from __future__ import annotations

import math
from typing import Final

from decoders._model import (
    Decoded,
    DeviceProfile,
    Direction,
    InvalidPayloadError,
    UnknownFPortError,
)
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import decoded, traffic_count

__all__ = ["CODEC", "decode", "encode"]

NAME: Final = "parametric-pcr2"
FPORT: Final = 14
HEADER: Final = bytes.fromhex("be0104")
LENGTH: Final = 17
_LINE: Final = 1
_VALUE_NAMES = ("battery_v", "solar_power_mw", "board_temperature_c")
_DIRECTIONS: tuple[Direction, Direction] = ("in", "out")


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a PCR2 v4 application payload into two traffic counts and device health."""
    if fport is not None and fport != FPORT:
        raise UnknownFPortError(NAME, None, f"unknown fPort {fport}, expected {FPORT}")
    reader = ByteReader(NAME, payload)
    header = reader.take(len(HEADER), "header")
    if header != HEADER:
        raise InvalidPayloadError(NAME, 0, f"header {header.hex()} is not {HEADER.hex()}")
    reader.need(LENGTH - len(HEADER), "counters")
    ltr, rtl = reader.u16be("left-to-right count"), reader.u16be("right-to-left count")
    ltr_sum, rtl_sum = reader.u16be("left-to-right total"), reader.u16be("right-to-left total")
    battery_mv = reader.u16be("battery")
    solar_mw = reader.u16be("solar power")
    temperature = reader.s16be("temperature")
    if not reader.at_end():
        raise InvalidPayloadError(NAME, reader.offset, f"{reader.remaining} bytes after byte 16")
    traffic_class = profile.traffic_class(_LINE)
    out = decoded(NAME, "traffic")
    out.values = {
        "battery_v": battery_mv / 1000,
        "solar_power_mw": float(solar_mw),
        "board_temperature_c": temperature / 10,
    }
    out.counts = [
        traffic_count(_LINE, "in", traffic_class, ltr, ltr_sum),
        traffic_count(_LINE, "out", traffic_class, rtl, rtl_sum),
    ]
    return out


def _word(value: float, what: str, signed: bool = False) -> bytes:
    low, high = (-0x8000, 0x7FFF) if signed else (0, 0xFFFF)
    if not math.isfinite(value) or not low <= (word := round(value)) <= high:
        raise ValueError(f"{NAME}: {what} {value!r} does not fit 16 bits")
    return word.to_bytes(2, "big", signed=signed)


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """Build the 17-byte payload; needs line 1 in and out with both count and cumulative."""
    if decoded.regions:
        raise ValueError(f"{NAME} carries no regions")
    if set(decoded.values) != set(_VALUE_NAMES):
        raise ValueError(f"{NAME} needs exactly {_VALUE_NAMES}, got {sorted(decoded.values)}")
    by_direction = {c.direction: c for c in decoded.counts if c.line == _LINE}
    if len(decoded.counts) != 2 or set(by_direction) != {"in", "out"}:
        raise ValueError(f"{NAME} carries exactly line {_LINE} in and out")
    out = bytearray(HEADER)
    for direction in _DIRECTIONS:
        count = by_direction[direction]
        if count.traffic_class != profile.traffic_class(_LINE):
            raise ValueError(f"{NAME} cannot carry class {count.traffic_class!r}")
        if count.count is None:
            raise ValueError(f"{NAME} needs a period count for {direction}")
        out += _word(count.count, f"{direction} count")
    for direction in _DIRECTIONS:
        cumulative = by_direction[direction].cumulative
        if cumulative is None:
            raise ValueError(f"{NAME} needs a cumulative count for {direction}")
        out += _word(cumulative, f"{direction} cumulative")
    values = decoded.values
    out += _word(values["battery_v"] * 1000, "battery_v")
    out += _word(values["solar_power_mw"], "solar_power_mw")
    out += _word(values["board_temperature_c"] * 10, "board_temperature_c x 10", signed=True)
    return FPORT, bytes(out)


CODEC = register(
    Codec(
        name=NAME,
        kinds=("traffic",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Parametric PCR2 radar people/vehicle counter, payload v4",
    )
)
