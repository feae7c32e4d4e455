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

from decoders._model import Decoded, DeviceProfile, Direction, RegionCount, TrafficCount
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import check_carried
from decoders.codecs._milesight import (
    DWELL_NAME,
    FPORT,
    Channel,
    Handler,
    decode_tlv,
    dwell_handler,
    encode_dwell,
    finish,
    pack,
    tlv,
)

__all__ = ["decode", "encode"]

CODEC = "milesight-vs133"
LINES = range(1, 5)
REGIONS = range(1, 5)
REGION_COUNTS: Channel = (0x0F, 0xE3)
DWELL: Channel = (0x10, 0xE4)


def _total_channel(line: int, direction: Direction) -> Channel:
    return (0x03 + 3 * (line - 1) + (1 if direction == "out" else 0), 0xD2)


def _period_channel(line: int) -> Channel:
    return (0x05 + 3 * (line - 1), 0xCC)


def _merge(
    out: Decoded,
    profile: DeviceProfile,
    line: int,
    direction: Direction,
    *,
    count: int | None = None,
    cumulative: int | None = None,
) -> None:
    """Fill the (line, direction) entry, creating it on the first record that mentions it."""
    for index, entry in enumerate(out.counts):
        if entry.line == line and entry.direction == direction:
            # Built directly: dataclasses.replace costs several times more on this hot path.
            out.counts[index] = TrafficCount(
                line,
                direction,
                entry.traffic_class,
                entry.count if count is None else count,
                entry.cumulative if cumulative is None else cumulative,
            )
            return
    out.counts.append(TrafficCount(line, direction, profile.traffic_class(line), count, cumulative))


def _total_handler(line: int, direction: Direction) -> Handler:
    label = f"line {line} cumulative {direction}"

    def handle(reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        total = reader.u32le(label)
        _merge(out, profile, line, direction, cumulative=total)

    return handle


def _period_handler(line: int) -> Handler:
    label_in, label_out = f"line {line} period in", f"line {line} period out"

    def handle(reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        count_in = reader.u16le(label_in)
        count_out = reader.u16le(label_out)
        _merge(out, profile, line, "in", count=count_in)
        _merge(out, profile, line, "out", count=count_out)

    return handle


def _region_handler(reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
    for region in REGIONS:
        out.regions.append(RegionCount(region, reader.u8(f"region {region} people")))


def _handlers() -> dict[Channel, Handler]:
    handlers: dict[Channel, Handler] = {REGION_COUNTS: _region_handler, DWELL: dwell_handler}
    for line in LINES:
        for direction in ("in", "out"):
            handlers[_total_channel(line, direction)] = _total_handler(line, direction)
        handlers[_period_channel(line)] = _period_handler(line)
    return handlers


_HANDLERS = _handlers()


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a VS133/VS135 uplink; see the module docstring for the layout."""
    return decode_tlv(CODEC, "traffic", payload, fport, profile, _HANDLERS)


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
