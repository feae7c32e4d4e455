"""Browan TBSL100 sound level sensor (fPort 105, 4 bytes).

Sources: TTN ``vendor/browan/tbsl100.js`` and ``tbsl100-codec.yaml`` (examples), Browan
"Sound Level Sensor Reference Manual" BQW_02_0011.001, section 4.1.2::

    byte | bits | content                                              | canonical
    0    | 0    | status: 0 keep-alive, 1 threshold event; 7:1 RFU     | threshold_event (0/1)
    1    | 3:0  | battery v, 1..14: (25 + v) / 10 V; 7:4 RFU           | battery_v
    2    | 6:0  | board temperature t (NTC): t - 32 °C; 7 RFU          | board_temperature_c
    3    | 7:0  | sound level, 40..100 dB(A); 0xFF = not measured      | la_db (omitted on 0xFF)

Name of the level: the manual calls it "decibel value" in dB(A), a reading the sensor takes every
detection interval (default 300 s) and compares with its threshold; it does not say the reading is
averaged over an interval, nor its time weighting. In the notation of
docs/architecture.md#quantity-names that is an A-weighted level with no time weighting and no
statistic named: ``la_db``, as in the vector of docs/payload-formats.md#browan-tbsl100. ``laeq_db``
would claim an equivalent (energy-averaged) level over the uplink interval, which a spot reading is
not; an aggregator may still form an LAeq from samples. RFU bits are ignored. The payload is exactly
4 bytes: more is another layout (``invalid``).
"""

from __future__ import annotations

from decoders._model import Decoded, DeviceProfile
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import (
    check_carried,
    check_consumed,
    check_fport,
    check_payload,
    decoded,
    wire_int,
)

__all__ = ["decode", "encode"]

CODEC = "browan-tbsl100"
FPORT = 105
NOT_MEASURED = 0xFF
_REQUIRED = ("threshold_event", "battery_v", "board_temperature_c")
_CARRIED = {*_REQUIRED, "la_db"}


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a TBSL100 status uplink; see the module docstring for the layout."""
    check_fport(CODEC, fport, (FPORT,))
    check_payload(CODEC, payload)
    reader = ByteReader(CODEC, payload)
    status = reader.u8("status")
    battery = reader.u8("battery")
    temperature = reader.u8("temperature")
    level = reader.u8("sound level")
    check_consumed(reader, "4-byte status")
    values = {
        "threshold_event": float(status & 0x01),
        "battery_v": (25 + (battery & 0x0F)) / 10,
        "board_temperature_c": float((temperature & 0x7F) - 32),
    }
    if level != NOT_MEASURED:
        values["la_db"] = float(level)
    out = decoded(CODEC, "noise")
    out.values = values
    return out


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`; a missing ``la_db`` is sent as 0xFF (not measured)."""
    values = decoded.values
    check_carried(CODEC, values, _CARRIED.__contains__)
    missing = [name for name in _REQUIRED if name not in values]
    if missing:
        raise ValueError(f"{CODEC} always carries {', '.join(missing)}")
    level = NOT_MEASURED
    if "la_db" in values:
        level = wire_int("la_db", values["la_db"], 1, 0, NOT_MEASURED - 1)
    payload = bytes(
        [
            wire_int("threshold_event", values["threshold_event"], 1, 0, 1),
            wire_int("battery_v", values["battery_v"], 10, 25, 25 + 0x0F) - 25,
            wire_int("board_temperature_c", values["board_temperature_c"], 1, -32, 0x7F - 32) + 32,
            level,
        ]
    )
    return FPORT, payload


register(
    Codec(
        name=CODEC,
        kinds=("noise",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Browan TBSL100 sound level sensor (spot dB(A) reading)",
    )
)
