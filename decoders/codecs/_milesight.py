"""Milesight TLV framing, shared by the WS302, AM307/AM319, VS133 and VS121 codecs.

Wire format (Milesight-IoT/SensorDecoders, every ``*-decoder.js``;
docs/payload-formats.md#milesight-tlv)::

    repeated [channel_id u8][channel_type u8][data]   data length fixed by (id, type), values LE
    uplinks on fPort 85

    01 75 | 1 | battery %, u8
    03 67 | 2 | temperature, s16 LE / 10 °C
    04 68 | 1 | humidity, u8 / 2 %RH

The vendor's decoders ``break`` out of the loop on an unknown (id, type) pair because the length of
its data is unknown; so do we, and mark the result ``partial``. Channels ``FF xx`` / ``FE xx``
(device information after a join, answers to downlinks) are not measurements and are not decoded
here: a payload that starts with one is rejected as ``unknown_channel``.

Each codec maps ``id << 8 | type`` to a :class:`Record` that reads that channel's data: an int key
and a method of a compiled class keep the per-record dispatch cheap (a tuple key and a Python
callable per record cost more than the reading itself).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from decoders._model import (
    Decoded,
    DeviceProfile,
    Kind,
    OutOfRangeError,
    RegionCount,
    TrafficCount,
    UnknownChannelError,
)
from decoders._reader import ByteReader
from decoders.codecs._fields import check_fport, check_payload, decoded, wire_int

__all__ = [
    "BATTERY",
    "DWELL_NAME",
    "DWELL_RECORD",
    "FPORT",
    "HUMIDITY",
    "TEMPERATURE",
    "Channel",
    "Format",
    "Record",
    "Scalar",
    "channel_key",
    "decode_tlv",
    "encode_dwell",
    "finish",
    "pack",
    "read",
    "sort_counts",
    "sort_regions",
    "tlv",
]

FPORT: Final = 85

Channel = tuple[int, int]
Format = Literal["u8", "u16le", "s16le", "u32le"]
_PACK: dict[Format, tuple[struct.Struct, int, int]] = {
    "u8": (struct.Struct("<B"), 0, 0xFF),
    "u16le": (struct.Struct("<H"), 0, 0xFFFF),
    "s16le": (struct.Struct("<h"), -0x8000, 0x7FFF),
    "u32le": (struct.Struct("<I"), 0, 0xFFFF_FFFF),
}


def tlv(channel: Channel, data: bytes) -> bytes:
    """One ``[id][type][data]`` record."""
    return bytes(channel) + data


def channel_key(channel: Channel) -> int:
    """The dispatch key of a channel: ``id << 8 | type``."""
    return channel[0] << 8 | channel[1]


def read(reader: ByteReader, fmt: Format, what: str) -> int:
    """One field of ``fmt``, length-checked by the reader."""
    if fmt == "u8":
        return reader.u8(what)
    if fmt == "u16le":
        return reader.u16le(what)
    if fmt == "s16le":
        return reader.s16le(what)
    return reader.u32le(what)


def pack(fmt: Format, name: str, value: float, scale: float = 1.0) -> bytes:
    """``value * scale`` as a field of ``fmt``; ``ValueError`` when it does not fit."""
    layout, low, high = _PACK[fmt]
    return layout.pack(wire_int(name, value, scale, low, high))


class Record:
    """Reads one channel's data (the id and type are already consumed) into ``out``."""

    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        raise NotImplementedError


class Scalar(Record):
    """A channel carrying one quantity: ``value = raw / divisor``."""

    def __init__(self, channel: Channel, name: str, fmt: Format, divisor: float = 1.0) -> None:
        self.channel = channel
        self.name = name
        self.fmt: Format = fmt
        self.divisor = divisor

    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        out.values[self.name] = read(reader, self.fmt, self.name) / self.divisor

    def encode(self, values: Mapping[str, float]) -> bytes:
        if self.name not in values:
            return b""
        return tlv(self.channel, pack(self.fmt, self.name, values[self.name], self.divisor))


BATTERY = Scalar((0x01, 0x75), "battery_pct", "u8")
TEMPERATURE = Scalar((0x03, 0x67), "temperature_c", "s16le", 10)
HUMIDITY = Scalar((0x04, 0x68), "humidity_pct", "u8", 2)


def decode_tlv(
    codec: str,
    kind: Kind,
    payload: bytes,
    fport: int | None,
    profile: DeviceProfile,
    records: dict[int, Record],
) -> Decoded:
    """Walk the TLV records of ``payload``, each through ``records[channel_key(channel)]``.

    Stops at the first unknown (id, type) pair with ``partial=True``, or raises
    ``UnknownChannelError`` when that is the first record (nothing decoded). Counts are sorted by
    (line, in before out) and regions by number, so the output does not depend on record order.
    """
    check_fport(codec, fport, (FPORT,))
    check_payload(codec, payload)
    out = decoded(codec, kind)
    reader = ByteReader(codec, payload)
    while not reader.at_end():
        start = reader.offset
        channel_id = reader.u8("channel id")
        channel_type = reader.u8("channel type")
        record = records.get(channel_id << 8 | channel_type)
        if record is None:
            detail = f"unknown channel {channel_id:02X} {channel_type:02X}"
            if start == 0:
                raise UnknownChannelError(codec, start, detail)
            out.partial = True
            break
        record.decode(reader, out, profile)
    sort_counts(out.counts)
    sort_regions(out.regions)
    return out


def _count_order(count: TrafficCount) -> tuple[int, bool]:
    return count.line, count.direction != "in"


def sort_counts(counts: list[TrafficCount]) -> None:
    """Sort by (line, in before out), stably; records usually come in that order already."""
    for index in range(1, len(counts)):
        if _count_order(counts[index]) < _count_order(counts[index - 1]):
            counts.sort(key=_count_order)
            return


def _region_order(region: RegionCount) -> int:
    return region.region


def sort_regions(regions: list[RegionCount]) -> None:
    """Sort by region number, stably; records usually come in that order already."""
    for index in range(1, len(regions)):
        if regions[index].region < regions[index - 1].region:
            regions.sort(key=_region_order)
            return


def finish(codec: str, records: Iterable[bytes]) -> tuple[int, bytes]:
    """``(FPORT, payload)``; an empty payload would not decode, so it is a ``ValueError``."""
    payload = b"".join(records)
    if not payload:
        raise ValueError(f"{codec}: nothing to encode")
    return FPORT, payload


# Dwell time records (VS133 ``10 E4``, VS121 ``0E E4``): region u8, average u16 LE, max u16 LE.
# The vendor decoders give no unit; the VS121/VS133 user guides state seconds.
DWELL_NAME = re.compile(r"region_([1-9][0-9]*)_dwell_(avg|max)_s")


#: The value names of regions 1..255 (a u8), so that no name is formatted per record.
_DWELL_NAMES: Final[tuple[tuple[str, str], ...]] = tuple(
    (f"region_{region}_dwell_avg_s", f"region_{region}_dwell_max_s") for region in range(256)
)


class _Dwell(Record):
    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        offset = reader.offset
        region = reader.u8("dwell region")
        if region == 0:
            raise OutOfRangeError(
                reader.codec, offset, "dwell time for region 0 (regions are 1-based)"
            )
        avg_name, max_name = _DWELL_NAMES[region]
        out.values[avg_name] = float(reader.u16le("average dwell time"))
        out.values[max_name] = float(reader.u16le("maximum dwell time"))


DWELL_RECORD: Record = _Dwell()


def encode_dwell(channel: Channel, values: Mapping[str, float]) -> list[bytes]:
    """One dwell record per region that has both its average and its maximum."""
    regions = sorted({int(m[1]) for name in values if (m := DWELL_NAME.fullmatch(name))})
    records = []
    for region in regions:
        avg, top = f"region_{region}_dwell_avg_s", f"region_{region}_dwell_max_s"
        if avg not in values or top not in values:
            raise ValueError(f"dwell time of region {region} needs both {avg} and {top}")
        data = (
            pack("u8", "dwell region", region)
            + pack("u16le", avg, values[avg])
            + pack("u16le", top, values[top])
        )
        records.append(tlv(channel, data))
    return records
