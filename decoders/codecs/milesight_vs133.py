"""Milesight VS133 / VS135 ToF people counter (fPort 85, Milesight TLV, up to 4 lines).

Sources: TTN ``vendor/milesight-iot/vs133-codec.yaml`` (example), Milesight-IoT/SensorDecoders
``vs-series/vs133/vs133-decoder.js`` and README::

    id type       | len | content
    03/06/09/0C D2 | 4   | line 1/2/3/4 cumulative in, u32 LE
    04/07/0A/0D D2 | 4   | line 1/2/3/4 cumulative out, u32 LE
    05/08/0B/0E CC | 4   | line 1/2/3/4 this period: in u16 LE, out u16 LE
    0F E3          | 4   | people in regions 1..4, u8 each
    10 E4          | 5   | dwell time: region u8, average u16 LE, max u16 LE

Each (line, direction) becomes one ``TrafficCount`` with ``count`` from the period record and
``cumulative`` from the running total (None when the uplink lacks that record). The payload has no
class: it is ``profile.traffic_class(line)`` (``unknown`` unless the registry says, e.g., that a
line spans a cycle lane). Region people counts go to ``regions``; dwell times to
``region_<n>_dwell_avg_s`` / ``region_<n>_dwell_max_s`` (seconds per the user guide; the
decoder gives no unit). The cumulative counters wrap at 2**32 and reset on reboot; deltas are the
aggregator's job. The "child" counters of the newer firmware (ids 11-1E) are not decoded and end
decoding like any unknown record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from decoders._model import (
    Decoded,
    DeviceProfile,
    Direction,
    RegionCount,
    TrafficCount,
    UnknownChannelError,
)
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import (
    check_carried,
    check_fport,
    check_payload,
    decoded,
    region_count,
    traffic_count,
)
from decoders.codecs._milesight import (
    DWELL_NAME,
    DWELL_RECORD,
    FPORT,
    Channel,
    encode_dwell,
    finish,
    pack,
    sort_regions,
    tlv,
)

__all__ = ["decode", "encode"]

CODEC: Final = "milesight-vs133"
LINE_COUNT: Final = 4
LINES = range(1, LINE_COUNT + 1)
REGIONS = range(1, 5)
REGION_COUNTS: Channel = (0x0F, 0xE3)
DWELL: Channel = (0x10, 0xE4)


def _total_channel(line: int, direction: Direction) -> Channel:
    return (0x03 + 3 * (line - 1) + (1 if direction == "out" else 0), 0xD2)


def _period_channel(line: int) -> Channel:
    return (0x05 + 3 * (line - 1), 0xCC)


# The decoder does not go through ``decode_tlv``: the line records are told apart by arithmetic on
# the channel id, and each line's numbers are kept as read and turned into ``TrafficCount`` once
# at the end (merging records into immutable counts rebuilt them per record). A (line, direction)
# is numbered ``slot = 2 * (line - 1) + (0 for in, 1 for out)``; read labels are by slot, so none
# is formatted per record.
_DIRECTIONS: Final[tuple[Direction, ...]] = ("in", "out")
_TOTAL_LABELS: Final[tuple[str, ...]] = tuple(
    f"line {line} cumulative {d}" for line in LINES for d in _DIRECTIONS
)
_PERIOD_LABELS: Final[tuple[str, ...]] = tuple(
    f"line {line} period {d}" for line in LINES for d in _DIRECTIONS
)
_REGION_LABELS: Final[tuple[str, ...]] = tuple(f"region {region} people" for region in REGIONS)
_SLOTS: Final = 2 * LINE_COUNT
_REGION_COUNTS_KEY: Final = REGION_COUNTS[0] << 8 | REGION_COUNTS[1]
_DWELL_KEY: Final = DWELL[0] << 8 | DWELL[1]


def _read_regions(reader: ByteReader, regions: list[RegionCount]) -> None:
    region = 1
    for label in _REGION_LABELS:
        regions.append(region_count(region, reader.u8(label)))
        region += 1


def _counts(
    profile: DeviceProfile, counts: list[int | None], totals: list[int | None]
) -> list[TrafficCount]:
    """One ``TrafficCount`` per (line, direction) some record mentioned, by line, in before out."""
    out: list[TrafficCount] = []
    for line in range(1, LINE_COUNT + 1):
        slot = 2 * (line - 1)
        if counts[slot] is None and totals[slot] is None and totals[slot + 1] is None:
            continue  # a period record sets both directions: none of this line was read
        traffic_class = profile.traffic_class(line)
        for direction in range(2):  # 0: in, 1: out
            count, total = counts[slot + direction], totals[slot + direction]
            if count is not None or total is not None:
                out.append(traffic_count(line, _DIRECTIONS[direction], traffic_class, count, total))
    return out


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a VS133/VS135 uplink; see the module docstring for the layout.

    Framing and errors as ``_milesight.decode_tlv``: stops at the first unknown (id, type) pair
    with ``partial=True``, or raises ``UnknownChannelError`` when that is the first record.
    """
    check_fport(CODEC, fport, (FPORT,))
    check_payload(CODEC, payload)
    out = decoded(CODEC, "traffic")
    reader = ByteReader(CODEC, payload)
    counts: list[int | None] = [None] * _SLOTS
    totals: list[int | None] = [None] * _SLOTS
    while not reader.at_end():
        start = reader.offset
        channel_id = reader.u8("channel id")
        channel_type = reader.u8("channel type")
        # Lines 1..4 use ids 03..0E, three per line: total in, total out, period.
        index = channel_id - 0x03
        is_line = 0 <= index < 3 * LINE_COUNT
        if is_line and channel_type == 0xD2 and index % 3 != 2:
            slot = index // 3 * 2 + index % 3
            totals[slot] = reader.u32le(_TOTAL_LABELS[slot])
        elif is_line and channel_type == 0xCC and index % 3 == 2:
            slot = index // 3 * 2
            counts[slot] = reader.u16le(_PERIOD_LABELS[slot])
            counts[slot + 1] = reader.u16le(_PERIOD_LABELS[slot + 1])
        elif channel_id << 8 | channel_type == _REGION_COUNTS_KEY:
            _read_regions(reader, out.regions)
        elif channel_id << 8 | channel_type == _DWELL_KEY:
            DWELL_RECORD.decode(reader, out, profile)
        else:
            detail = f"unknown channel {channel_id:02X} {channel_type:02X}"
            if start == 0:
                raise UnknownChannelError(CODEC, start, detail)
            out.partial = True
            break
    out.counts = _counts(profile, counts, totals)
    sort_regions(out.regions)
    return out


def _encode_line(line: int, entries: Sequence[TrafficCount]) -> Iterator[bytes]:
    by_direction = {entry.direction: entry for entry in entries}
    if len(by_direction) != len(entries):
        raise ValueError(f"line {line}: one count per direction")
    for direction in ("in", "out"):
        entry = by_direction.get(direction)
        if entry is not None and entry.cumulative is not None:
            data = pack("u32le", f"line {line} cumulative {direction}", entry.cumulative)
            yield tlv(_total_channel(line, direction), data)
    count_in = by_direction["in"].count if "in" in by_direction else None
    count_out = by_direction["out"].count if "out" in by_direction else None
    if count_in is None and count_out is None:
        return
    if count_in is None or count_out is None:
        raise ValueError(f"line {line}: the period record carries both in and out")
    yield tlv(
        _period_channel(line),
        pack("u16le", f"line {line} period in", count_in)
        + pack("u16le", f"line {line} period out", count_out),
    )


def _encode_counts(counts: Sequence[TrafficCount], profile: DeviceProfile) -> Iterator[bytes]:
    for entry in counts:
        if entry.line not in LINES:
            raise ValueError(f"line {entry.line} is not one of 1..4")
        if entry.traffic_class != profile.traffic_class(entry.line):
            raise ValueError(
                f"line {entry.line}: class {entry.traffic_class!r} is not carried; the profile "
                f"gives {profile.traffic_class(entry.line)!r}"
            )
        if entry.count is None and entry.cumulative is None:
            raise ValueError(f"line {entry.line} {entry.direction}: no count to encode")
    for line in LINES:
        yield from _encode_line(line, [c for c in counts if c.line == line])


def _encode_regions(regions: Sequence[RegionCount]) -> bytes:
    if not regions:
        return b""
    by_region = {r.region: r.count for r in regions}
    if sorted(by_region) != list(REGIONS) or len(regions) != len(REGIONS):
        raise ValueError("the region record carries exactly regions 1..4")
    return tlv(
        REGION_COUNTS,
        b"".join(pack("u8", f"region {r} people", by_region[r]) for r in REGIONS),
    )


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`: per line totals and period, regions, dwell times."""
    check_carried(CODEC, decoded.values, lambda name: DWELL_NAME.fullmatch(name) is not None)
    records = [
        *_encode_counts(decoded.counts, profile),
        _encode_regions(decoded.regions),
        *encode_dwell(DWELL, decoded.values),
    ]
    return finish(CODEC, records)


register(
    Codec(
        name=CODEC,
        kinds=("traffic",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Milesight VS133/VS135 ToF people counter (4 lines, in/out)",
    )
)
