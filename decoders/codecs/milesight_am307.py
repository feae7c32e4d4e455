"""Milesight AM307 / AM319 indoor ambience monitoring sensors (fPort 85, Milesight TLV).

Sources: TTN ``vendor/milesight-iot/am307.js`` (+ ``am307-codec.yaml`` examples), Milesight-IoT/
SensorDecoders ``am-series/am307/am307-decoder.js``, ``am-series/am319-o3/am319-o3-decoder.js``
and their READMEs::

    id type | len | content                                  | canonical
    01 75   | 1   | battery %, u8                            | battery_pct
    03 67   | 2   | temperature, s16 LE / 10 °C              | temperature_c
    04 68   | 1   | humidity, u8 / 2 %RH                     | humidity_pct
    05 00   | 1   | PIR, 0 idle / 1 trigger                  | motion_detected (0/1)
    06 CB   | 1   | light level, u8 (a level index, not lux) | light_level
    07 7D   | 2   | CO2 ppm, u16 LE                          | co2_ppm
    08 7D   | 2   | TVOC, u16 LE (see below)                 | tvoc_iaq = raw / 100
    08 E6   | 2   | TVOC µg/m³, u16 LE (newer firmware)      | tvoc_ugm3
    09 73   | 2   | pressure, u16 LE / 10 hPa                | pressure_hpa
    0A 7D   | 2   | HCHO, u16 LE / 100 mg/m³ (AM319 HCHO)    | hcho_mgm3
    0B 7D   | 2   | PM2.5 µg/m³, u16 LE                      | pm2_5_ugm3
    0C 7D   | 2   | PM10 µg/m³, u16 LE                       | pm10_ugm3
    0D 7D   | 2   | O3, u16 LE / 100 ppm (AM319 O3)          | o3_ugm3 = ppm * 1996
    0E 01   | 1   | buzzer, 0 off / 1 on                     | buzzer_on (0/1)

Vendor disagreement on TVOC ``08 7D``: TTN's ``am307.js`` and Milesight's older AM300 README pass
the raw integer through without a unit (the TTN example ``087D0700`` gives ``tvoc: 7``); Milesight's
current decoders and READMEs read it as an IAQ index * 100 (``087D2500`` gives 0.37) and add
``08 E6`` for firmware configured to report µg/m³. We follow the vendor's current semantics: an
IAQ index is not a mixing ratio, so ``08 7D`` is ``tvoc_iaq`` and never ``tvoc_ppb``; ``08 E6``
is ``tvoc_ugm3`` (converting it to ppb would need a molar mass the sensor does not state).

O3 is converted to mass concentration with the factor of docs/architecture.md#quantity-names (1 ppm
O3 = 1996 µg/m³ at 20 °C, 1013.25 hPa), so its resolution is 19.96 µg/m³. The pair ``05 6A`` (PIR
activity count of the first firmware, in TTN's commented-out example) is not in the current tables
and ends decoding.
"""

from __future__ import annotations

from typing import Final

from decoders._model import Decoded, DeviceProfile
from decoders._registry import Codec, register
from decoders.codecs._fields import check_carried
from decoders.codecs._milesight import (
    BATTERY,
    FPORT,
    HUMIDITY,
    TEMPERATURE,
    Record,
    Scalar,
    channel_key,
    decode_tlv,
    finish,
)

__all__ = ["decode", "encode"]

CODEC: Final = "milesight-am307"
O3_UGM3_PER_PPM = 1996.0

SCALARS: tuple[Scalar, ...] = (
    BATTERY,
    TEMPERATURE,
    HUMIDITY,
    Scalar((0x05, 0x00), "motion_detected", "u8"),
    Scalar((0x06, 0xCB), "light_level", "u8"),
    Scalar((0x07, 0x7D), "co2_ppm", "u16le"),
    Scalar((0x08, 0x7D), "tvoc_iaq", "u16le", 100),
    Scalar((0x08, 0xE6), "tvoc_ugm3", "u16le"),
    Scalar((0x09, 0x73), "pressure_hpa", "u16le", 10),
    Scalar((0x0A, 0x7D), "hcho_mgm3", "u16le", 100),
    Scalar((0x0B, 0x7D), "pm2_5_ugm3", "u16le"),
    Scalar((0x0C, 0x7D), "pm10_ugm3", "u16le"),
    # raw / 100 ppm * 1996 µg/m³ per ppm
    Scalar((0x0D, 0x7D), "o3_ugm3", "u16le", 100 / O3_UGM3_PER_PPM),
    Scalar((0x0E, 0x01), "buzzer_on", "u8"),
)
_RECORDS: Final[dict[int, Record]] = {channel_key(s.channel): s for s in SCALARS}
_CARRIED = {s.name for s in SCALARS}


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode an AM307/AM319 uplink; see the module docstring for the layout."""
    return decode_tlv(CODEC, "air", payload, fport, profile, _RECORDS)


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`, one record per present quantity in table order."""
    check_carried(CODEC, decoded.values, _CARRIED.__contains__)
    return finish(CODEC, [s.encode(decoded.values) for s in SCALARS])


register(
    Codec(
        name=CODEC,
        kinds=("air",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Milesight AM307/AM319 indoor air quality sensors",
    )
)
