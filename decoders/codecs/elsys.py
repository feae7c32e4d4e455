"""Elsys ERS family room sensors (ERS, ERS CO2, ERS Sound, ERS VOC, ...; Elsys payload).

Sources: Elsys' generic decoder as shipped in TTN ``vendor/elsys/elsys.js`` (examples in
``vendor/elsys/ers-sound-codec.yaml``), the ERS Sound operating manual,
docs/payload-formats.md#elsys-ers-and-ers-sound::

    repeated [type u8][value], value length fixed per type, big-endian; unknown type ends parsing

    type | len | content                               | canonical
    01   | 2   | temperature, s16 BE / 10 °C           | temperature_c
    02   | 1   | humidity, u8 %                        | humidity_pct
    04   | 2   | light, u16 BE lux                     | light_lux
    05   | 1   | motion (PIR) count, u8                | motion_count
    06   | 2   | CO2, u16 BE ppm                       | co2_ppm
    07   | 2   | supply voltage, u16 BE mV             | battery_v = mV / 1000
    14   | 4   | pressure, u32 BE / 1000 hPa           | pressure_hpa
    15   | 2   | sound: peak u8 dB(A), average u8 dB(A) | lamax_db, laeq_db
    1C   | 2   | TVOC, u16 BE ppb                      | tvoc_ppb

Sound names (notation L{A,C,Z}{F,S,I or none}{eq,max,min,peak} of
docs/architecture.md#quantity-names): Elsys documents the ERS Sound as measuring "sound levels (peak
and average)" in dB(A) over each measurement period and sends both as whole decibels. In acoustics a
peak level (Lpeak, LCpeak; IEC 61672-1) is the greatest instantaneous sound pressure, with no time
weighting and normally C- or Z-weighted, the quantity impulse-noise limits use. An A-weighted 1 dB
figure from a room sensor is the highest A-weighted level seen in the period, i.e. a maximum level:
``lamax_db``, with no time weighting in the name because Elsys states none. ``lapeak_db`` would
invite comparison with LCpeak limits it cannot support. The average over the period is its
equivalent level, ``laeq_db``; Elsys does not say whether it averages energies (an LAeq) or decibels
(lower for fluctuating noise), so treat it as an approximate LAeq. The kind is ``noise`` when the
sound record is present, else ``air``.

fPort: a device setting (NFC key ``Port``, 1..254). Accepted: 1 (the TTN example) and 5 (Elsys'
usual factory setting, not confirmed by the sources above); devices configured otherwise need
their fPort passed as unknown (None). Other Elsys types (accelerometer 03, analog 08, GPS 09,
pulse 0A, ...) are not decoded and end parsing like any unknown type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from decoders._model import Decoded, DeviceProfile, UnknownChannelError
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import (
    check_carried,
    check_fport,
    check_payload,
    decoded,
    wire_int,
)

__all__ = ["decode", "encode"]

CODEC = "elsys"
FPORTS = (1, 5)
SOUND = 0x15
Format = Literal["u8", "u16be", "s16be", "u32be"]

_READ: dict[Format, Callable[[ByteReader, str], int]] = {
    "u8": ByteReader.u8,
    "u16be": ByteReader.u16be,
    "s16be": ByteReader.s16be,
    "u32be": ByteReader.u32be,
}
_PACK: dict[Format, tuple[struct.Struct, int, int]] = {
    "u8": (struct.Struct(">B"), 0, 0xFF),
    "u16be": (struct.Struct(">H"), 0, 0xFFFF),
    "s16be": (struct.Struct(">h"), -0x8000, 0x7FFF),
    "u32be": (struct.Struct(">I"), 0, 0xFFFF_FFFF),
}


@dataclass(frozen=True, slots=True)
class ElsysType:
    """One type: its values, all of ``fmt``, each ``raw / divisor``."""

    code: int
    names: tuple[str, ...]
    fmt: Format
    divisor: float = 1.0


TYPES: tuple[ElsysType, ...] = (
    ElsysType(0x01, ("temperature_c",), "s16be", 10),
    ElsysType(0x02, ("humidity_pct",), "u8"),
    ElsysType(0x04, ("light_lux",), "u16be"),
    ElsysType(0x05, ("motion_count",), "u8"),
    ElsysType(0x06, ("co2_ppm",), "u16be"),
    ElsysType(0x07, ("battery_v",), "u16be", 1000),
    ElsysType(0x14, ("pressure_hpa",), "u32be", 1000),
    ElsysType(SOUND, ("lamax_db", "laeq_db"), "u8"),
    ElsysType(0x1C, ("tvoc_ppb",), "u16be"),
)
_BY_CODE = {t.code: t for t in TYPES}
_CARRIED = {name for t in TYPES for name in t.names}


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode an Elsys uplink; see the module docstring for the layout."""
    check_fport(CODEC, fport, FPORTS)
    check_payload(CODEC, payload)
    out = decoded(CODEC, "air")
    reader = ByteReader(CODEC, payload)
    while not reader.at_end():
        start = reader.offset
        code = reader.u8("type")
        elsys_type = _BY_CODE.get(code)
        if elsys_type is None:
            if start == 0:
                raise UnknownChannelError(CODEC, start, f"unknown type {code:02X}")
            out.partial = True
            break
        for name in elsys_type.names:
            out.values[name] = _READ[elsys_type.fmt](reader, name) / elsys_type.divisor
        if code == SOUND:
            out.kind = "noise"
    return out


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`: one record per present type, by type number; fPort 1."""
    values = decoded.values
    check_carried(CODEC, values, _CARRIED.__contains__)
    records = []
    for elsys_type in TYPES:
        present = [name for name in elsys_type.names if name in values]
        if not present:
            continue
        if len(present) != len(elsys_type.names):
            raise ValueError(f"type {elsys_type.code:02X} carries {', '.join(elsys_type.names)}")
        layout, low, high = _PACK[elsys_type.fmt]
        records.append(bytes([elsys_type.code]))
        records.extend(
            layout.pack(wire_int(name, values[name], elsys_type.divisor, low, high))
            for name in elsys_type.names
        )
    if not records:
        raise ValueError(f"{CODEC}: nothing to encode")
    return FPORTS[0], b"".join(records)


register(
    Codec(
        name=CODEC,
        kinds=("air", "noise"),
        fports=FPORTS,
        decode_fn=decode,
        encode_fn=encode,
        description="Elsys ERS family room sensors (climate, CO2, TVOC, sound)",
    )
)
