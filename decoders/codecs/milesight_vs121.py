"""Milesight VS121 AI occupancy sensor (fPort 85, Milesight TLV, up to 16 regions).

Sources: Milesight-IoT/SensorDecoders ``vs-series/vs121/vs121-decoder.js`` and README
(examples), docs/payload-formats.md#milesight-vs121::

    id type | len | content
    04 C9   | 4   | total people u8, region count u8, occupied mask u16 BE (bit i = region i+1)
    05 CC   | 4   | people in, out: s16 LE each
    06 CD   | 1   | max people u8
    07 D5   | 8   | people in regions 1..8, u8 each
    08 D5   | 8   | people in regions 9..16, u8 each
    0D CC   | 4   | total in, out: u16 LE each
    0E E4   | 5   | dwell time: region u8, average u16 LE, max u16 LE
    0F 85   | 4   | timestamp u32 LE, unix seconds

Canonical output: total people ``people_count``; mask ``region_<i>_occupied`` (0/1) for regions
1..region count; ``people_in_count`` / ``people_out_count`` (people passing since the last report);
``people_max_count``; people per region in ``regions``; ``people_in_total_count`` /
``people_out_total_count`` (cumulative, u16, wrap and reset like any counter); dwell times
``region_<n>_dwell_avg_s`` / ``region_<n>_dwell_max_s``; the timestamp as ``observed_at`` (UTC).

Vendor disagreement on the mask: the TTN decoder compares the mask instead of testing bits; the
vendor's decoder tests bit i for regions 1..region count, and so do we. A region count above 16
cannot be described by a 16-bit mask and is ``out_of_range``. The people flows (``09..0C DA``)
and line counts (``10 F7``) of newer firmware are not decoded and end decoding.
Dwell times are in seconds per the user guide (the decoder gives no unit).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from decoders._model import Decoded, DeviceProfile, OutOfRangeError, RegionCount
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import check_carried, region_count
from decoders.codecs._milesight import (
    DWELL_NAME,
    DWELL_RECORD,
    FPORT,
    Channel,
    Format,
    Record,
    Scalar,
    channel_key,
    decode_tlv,
    encode_dwell,
    finish,
    pack,
    read,
    tlv,
)

__all__ = ["decode", "encode"]

CODEC: Final = "milesight-vs121"
MAX_REGIONS = 16
PEOPLE: Channel = (0x04, 0xC9)
PASSING: Channel = (0x05, 0xCC)
REGIONS_1_8: Channel = (0x07, 0xD5)
REGIONS_9_16: Channel = (0x08, 0xD5)
TOTAL_PASSING: Channel = (0x0D, 0xCC)
DWELL: Channel = (0x0E, 0xE4)
TIMESTAMP: Channel = (0x0F, 0x85)
PEOPLE_MAX = Scalar((0x06, 0xCD), "people_max_count", "u8")
OCCUPIED_NAME = re.compile(r"region_([1-9][0-9]*)_occupied")
PAIRS: dict[Channel, tuple[Format, str, str]] = {
    PASSING: ("s16le", "people_in_count", "people_out_count"),
    TOTAL_PASSING: ("u16le", "people_in_total_count", "people_out_total_count"),
}


#: ``region_<i>_occupied`` for regions 1..16 at index i - 1, not formatted per record.
_OCCUPIED_NAMES: Final[tuple[str, ...]] = tuple(
    f"region_{region}_occupied" for region in range(1, MAX_REGIONS + 1)
)


class _People(Record):
    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        values = out.values
        values["people_count"] = float(reader.u8("total people"))
        offset = reader.offset
        region_count = reader.u8("region count")
        if region_count > MAX_REGIONS:
            raise OutOfRangeError(CODEC, offset, f"region count {region_count} above {MAX_REGIONS}")
        mask = reader.u16be("occupied region mask")
        for index in range(region_count):
            values[_OCCUPIED_NAMES[index]] = float(mask >> index & 1)


class _Pair(Record):
    """Two quantities of one format, e.g. people in and out."""

    def __init__(self, channel: Channel) -> None:
        self.fmt, self.first, self.second = PAIRS[channel]

    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        out.values[self.first] = float(read(reader, self.fmt, self.first))
        out.values[self.second] = float(read(reader, self.fmt, self.second))


class _Regions(Record):
    """People in eight consecutive regions from ``first_region``, one u8 each."""

    def __init__(self, first_region: int) -> None:
        self.first_region = first_region
        self.labels = tuple(f"region {r} people" for r in range(first_region, first_region + 8))

    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        regions = out.regions
        region = self.first_region
        for label in self.labels:
            regions.append(region_count(region, reader.u8(label)))
            region += 1


class _Timestamp(Record):
    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        out.observed_at = datetime.fromtimestamp(reader.u32le("timestamp"), tz=UTC)


_RECORDS: Final[dict[int, Record]] = {
    channel_key(PEOPLE): _People(),
    channel_key(PASSING): _Pair(PASSING),
    channel_key(PEOPLE_MAX.channel): PEOPLE_MAX,
    channel_key(REGIONS_1_8): _Regions(1),
    channel_key(REGIONS_9_16): _Regions(9),
    channel_key(TOTAL_PASSING): _Pair(TOTAL_PASSING),
    channel_key(DWELL): DWELL_RECORD,
    channel_key(TIMESTAMP): _Timestamp(),
}
_NAMES = {"people_count", PEOPLE_MAX.name} | {n for _, *names in PAIRS.values() for n in names}


def _carried(name: str) -> bool:
    return (
        name in _NAMES
        or OCCUPIED_NAME.fullmatch(name) is not None
        or DWELL_NAME.fullmatch(name) is not None
    )


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a VS121 uplink; see the module docstring for the layout."""
    return decode_tlv(CODEC, "occupancy", payload, fport, profile, _RECORDS)


def _encode_people(values: Mapping[str, float]) -> bytes:
    occupied = sorted(int(m[1]) for name in values if (m := OCCUPIED_NAME.fullmatch(name)))
    if "people_count" not in values:
        if occupied:
            raise ValueError("the occupied-region mask travels with people_count")
        return b""
    if occupied != list(range(1, len(occupied) + 1)) or len(occupied) > MAX_REGIONS:
        raise ValueError("occupied flags must cover regions 1..n, n <= 16, without gaps")
    mask = 0
    for region in occupied:
        flag = values[f"region_{region}_occupied"]
        if flag not in (0, 1):
            raise ValueError(f"region_{region}_occupied={flag!r} is not 0 or 1")
        mask |= int(flag) << (region - 1)
    data = pack("u8", "people_count", values["people_count"]) + pack(
        "u8", "region count", len(occupied)
    )
    return tlv(PEOPLE, data + mask.to_bytes(2, "big"))


def _encode_pair(channel: Channel, values: Mapping[str, float]) -> bytes:
    fmt, first, second = PAIRS[channel]
    if first not in values and second not in values:
        return b""
    if first not in values or second not in values:
        raise ValueError(f"{first} and {second} travel in one record")
    return tlv(channel, pack(fmt, first, values[first]) + pack(fmt, second, values[second]))


def _encode_regions(regions: Sequence[RegionCount]) -> list[bytes]:
    by_region = {r.region: r.count for r in regions}
    if len(by_region) != len(regions) or not set(by_region) <= set(range(1, MAX_REGIONS + 1)):
        raise ValueError("regions must be distinct and within 1..16")
    records = []
    for channel, first in ((REGIONS_1_8, 1), (REGIONS_9_16, 9)):
        block = range(first, first + 8)
        present = [r for r in block if r in by_region]
        if not present:
            continue
        if len(present) != len(block):
            raise ValueError(f"regions {first}..{first + 7} travel together in one record")
        records.append(
            tlv(channel, b"".join(pack("u8", f"region {r}", by_region[r]) for r in block))
        )
    return records


def _encode_timestamp(observed_at: datetime | None) -> bytes:
    if observed_at is None:
        return b""
    if observed_at.tzinfo is None:
        raise ValueError("observed_at must be timezone-aware")
    return tlv(TIMESTAMP, pack("u32le", "timestamp", observed_at.timestamp() // 1))


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`, records in table order; observed_at to whole seconds."""
    values = decoded.values
    check_carried(CODEC, values, _carried)
    records = [
        _encode_people(values),
        _encode_pair(PASSING, values),
        PEOPLE_MAX.encode(values),
        *_encode_regions(decoded.regions),
        _encode_pair(TOTAL_PASSING, values),
        *encode_dwell(DWELL, values),
        _encode_timestamp(decoded.observed_at),
    ]
    return finish(CODEC, records)


register(
    Codec(
        name=CODEC,
        kinds=("occupancy",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Milesight VS121 occupancy camera (people per region, in/out)",
    )
)
