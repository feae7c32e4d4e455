"""Milesight WS302 sound level sensor (fPort 85, Milesight TLV).

Source: Milesight-IoT/SensorDecoders ``ws-series/ws302/ws302-decoder.js`` and its README::

    id type | len | content
    01 75   | 1   | battery %, u8
    05 5B   | 7   | weighting u8, then three u16 LE / 10 dB: current level L, Leq, Lmax

Weighting byte: bits 0-1 frequency weighting {0: Z, 1: A, 2: C}; bits 2-3 time weighting
{0: I, 1: F, 2: S}. The vendor names the three levels ``L<f><t>``, ``L<f>eq`` and
``L<f><t>max`` (weighting 0x05 gives LAF, LAeq, LAFmax), which is the acoustic notation of
docs/architecture.md#quantity-names, so the canonical names follow the byte: ``l<f><t>_db``,
``l<f>eq_db``, ``l<f><t>max_db``. Leq has no time weighting. A weighting value the vendor does not
define (3 in either field) is ``out_of_range``: naming the levels would be a guess. No minimum level
is carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from decoders._model import Decoded, DeviceProfile, OutOfRangeError
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import check_carried
from decoders.codecs._milesight import (
    BATTERY,
    FPORT,
    Channel,
    Record,
    channel_key,
    decode_tlv,
    finish,
    pack,
    tlv,
)

__all__ = ["decode", "encode"]

CODEC: Final = "milesight-ws302"
SOUND: Channel = (0x05, 0x5B)
FREQUENCY_WEIGHTING = {0: "z", 1: "a", 2: "c"}
TIME_WEIGHTING = {0: "i", 1: "f", 2: "s"}


def _level_names(frequency: str, time: str) -> tuple[str, str, str]:
    return f"l{frequency}{time}_db", f"l{frequency}eq_db", f"l{frequency}{time}max_db"


_ALL_LEVELS = {
    (f_code, t_code): _level_names(f, t)
    for f_code, f in FREQUENCY_WEIGHTING.items()
    for t_code, t in TIME_WEIGHTING.items()
}
#: The level names by the weighting byte's low nibble (None: undefined), not formatted per record.
_NAMES_BY_NIBBLE: Final[tuple[tuple[str, str, str] | None, ...]] = tuple(
    _ALL_LEVELS.get((nibble & 0x03, nibble >> 2)) for nibble in range(16)
)


class _Sound(Record):
    def decode(self, reader: ByteReader, out: Decoded, profile: DeviceProfile) -> None:
        offset = reader.offset
        weighting = reader.u8("weighting")
        names = _NAMES_BY_NIBBLE[weighting & 0x0F]
        if names is None:
            raise OutOfRangeError(CODEC, offset, f"undefined weighting byte {weighting:#04x}")
        level, leq, top = names
        values = out.values
        values[level] = reader.u16le(level) / 10
        values[leq] = reader.u16le(leq) / 10
        values[top] = reader.u16le(top) / 10


_RECORDS: Final[dict[int, Record]] = {
    channel_key(BATTERY.channel): BATTERY,
    channel_key(SOUND): _Sound(),
}
_LEVELS = {name for names in _ALL_LEVELS.values() for name in names}
_CARRIED = {BATTERY.name} | _LEVELS


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a WS302 uplink; see the module docstring for the layout."""
    return decode_tlv(CODEC, "noise", payload, fport, profile, _RECORDS)


def _encode_sound(values: Mapping[str, float]) -> bytes:
    levels = {name for name in values if name in _LEVELS}
    if not levels:
        return b""
    # Leq is shared by the three time weightings of a frequency weighting, so the weighting pair
    # is identified by the time-weighted level or maximum.
    present = [
        (codes, names)
        for codes, names in _ALL_LEVELS.items()
        if names[0] in values or names[2] in values
    ]
    if len(present) != 1 or levels != set(present[0][1]):
        raise ValueError(
            "the sound record carries the level, Leq and maximum of exactly one weighting, "
            f"got {', '.join(sorted(levels))}"
        )
    (f_code, t_code), names = present[0]
    data = pack("u8", "weighting", f_code | t_code << 2)
    data += b"".join(pack("u16le", name, values[name], 10) for name in names)
    return tlv(SOUND, data)


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`: battery, then the sound record."""
    check_carried(CODEC, decoded.values, _CARRIED.__contains__)
    return finish(CODEC, [BATTERY.encode(decoded.values), _encode_sound(decoded.values)])


register(
    Codec(
        name=CODEC,
        kinds=("noise",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Milesight WS302 sound level sensor (L, Leq, Lmax per weighting)",
    )
)
