"""Decentlab protocol v2 framing, shared by every Decentlab codec.

Wire format (Decentlab's reference decoders, e.g. ``vendor/decentlab/dl-pm.js`` in
TheThingsNetwork/lorawan-devices, and docs/payload-formats.md#decentlab-protocol-v2)::

    [0x02 version][device_id u16 BE][flags u16 BE][group 0 words][group 1 words]...

Bit i of ``flags`` says sensor group i is present; each group is a fixed number of u16 BE words
and absent groups send nothing. Groups follow in bit order, so known groups decode even when a
higher, unknown bit is set: the frame is then ``partial`` and the rest is ignored. Bytes left over
after the groups the flags announce mean the payload is not this format (the vendor ignores them;
we reject them because they usually mean a payload routed to the wrong Decentlab model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from decoders._model import InvalidPayloadError, UnknownFPortError
from decoders._reader import ByteReader

__all__ = [
    "ENCODER_DEVICE_ID",
    "FPORT",
    "PROTOCOL_VERSION",
    "Frame",
    "check_fport",
    "electrode_mv",
    "electrode_word",
    "read_frame",
    "sht_humidity_pct",
    "sht_humidity_word",
    "sht_temperature_c",
    "sht_temperature_word",
    "to_word",
    "write_frame",
]

PROTOCOL_VERSION: Final = 2
FPORT: Final = 1
#: Decoded does not carry the Decentlab device id, so encoders write this one.
ENCODER_DEVICE_ID = 0


class Frame:
    """One decoded v2 frame: the device id and, by flag bit, the words of the group (None: absent).

    A plain class: compiled, its constructor is a C call (a dataclass's ``__init__`` stays Python).
    """

    def __init__(self, device_id: int, groups: list[list[int] | None], partial: bool) -> None:
        self.device_id = device_id
        self.groups = groups
        self.partial = partial


def check_fport(codec: str, fport: int | None) -> None:
    """Decentlab sensors send measurements on fPort 1; None (unknown) is accepted."""
    if fport is not None and fport != FPORT:
        raise UnknownFPortError(codec, None, f"unknown fPort {fport}, expected {FPORT}")


def read_frame(codec: str, payload: bytes, group_lengths: tuple[int, ...]) -> Frame:
    """Split a v2 frame into groups; ``group_lengths[i]`` is the word count of flag bit i."""
    reader = ByteReader(codec, payload)
    version = reader.u8("protocol version")
    if version != PROTOCOL_VERSION:
        raise InvalidPayloadError(codec, 0, f"protocol version {version} is not {PROTOCOL_VERSION}")
    device_id = reader.u16be("device id")
    flags = reader.u16be("flags")
    groups: list[list[int] | None] = [
        _read_group(reader, bit, group_lengths[bit]) if flags >> bit & 1 else None
        for bit in range(len(group_lengths))
    ]
    partial = flags >> len(group_lengths) != 0
    if not partial and not reader.at_end():
        raise InvalidPayloadError(
            codec, reader.offset, f"{reader.remaining} bytes after the groups of flags {flags:#06x}"
        )
    return Frame(device_id, groups, partial)


def _read_group(reader: ByteReader, bit: int, length: int) -> list[int]:
    """The ``length`` words of group ``bit``; the read labels are only formatted when short."""
    if reader.remaining < 2 * length:
        return [reader.u16be(f"group {bit} word {i}") for i in range(length)]  # raises
    data = reader.data
    offset = reader.offset
    reader.offset = offset + 2 * length
    return [data[offset + 2 * i] << 8 | data[offset + 2 * i + 1] for i in range(length)]


def write_frame(device_id: int, groups: Mapping[int, Sequence[int]]) -> bytes:
    """The inverse of :func:`read_frame`: words must already be in 0..65535."""
    flags = sum(1 << bit for bit in groups)
    out = bytearray([PROTOCOL_VERSION])
    out += to_word(device_id, "device id").to_bytes(2, "big")
    out += flags.to_bytes(2, "big")
    for bit in sorted(groups):
        for word in groups[bit]:
            out += to_word(word, f"group {bit} word").to_bytes(2, "big")
    return bytes(out)


def to_word(value: float, what: str) -> int:
    """Round ``value`` to a u16 word; ValueError when it does not fit."""
    if not math.isfinite(value) or not 0 <= (word := round(value)) <= 0xFFFF:
        raise ValueError(f"{what} {value!r} does not fit a u16 word")
    return word


# Sensirion SHT2x/SHT3x conversions used by Decentlab for air temperature and humidity.
def sht_temperature_c(word: int) -> float:
    return 175.72 * word / 65536 - 46.85


def sht_temperature_word(celsius: float) -> int:
    return to_word((celsius + 46.85) * 65536 / 175.72, "temperature_c")


def sht_humidity_pct(word: int) -> float:
    return 125 * word / 65536 - 6


def sht_humidity_word(percent: float) -> int:
    return to_word((percent + 6) * 65536 / 125, "humidity_pct")


# Electrochemical cell channels (DL-AC): a bipolar ±3 V ADC reading, mV = 3·(w/32768 - 1)·1000.
def electrode_mv(word: int) -> float:
    return 3 * (word / 32768 - 1) * 1000


def electrode_word(millivolts: float) -> int:
    return to_word((millivolts / 3000 + 1) * 32768, "electrode mV")
