"""LoRaSoundkit open-hardware sound level meter (fPort 22, 19 bytes).

Sources: meekm/LoRaSoundkit ``src/main.cpp`` (``composeMessage``), ``src/measurement.cpp`` and
``ttn-payload/TTN-V3-payloadformatter.js``; docs/payload-formats.md#lorasoundkit::

    byte  | content
    0     | scale s = round(largest of the LA, LC, LZ maxima), u8
    1..9  | LA min, max, avg; LC min, max, avg; LZ min, max, avg
    10..18| LZ octave bands 31.5, 63, 125, 250, 500, 1000, 2000, 4000, 8000 Hz
          | each value in dB = byte * s / 255

Names: ``la``/``lc``/``lz`` + ``min``/``max``/``eq`` (the notation of
docs/architecture.md#quantity-names; the firmware's "avg" is the energy mean of the per-FFT-block
levels over the send interval, 120 s by default, so it is an Leq), bands ``lz_<band>hz_db``
(``lz_31_5hz_db`` … ``lz_8000hz_db``). The min and max are over the firmware's FFT blocks, not a
standard F or S time weighting, hence none in the name.

Resolution is s / 255 dB (0.3 dB at s = 75). The firmware scales by 255 / max but sends round(max),
which adds up to 0.5 dB of error on its own payloads; our encoder sends s = ceil(max) and scales by
255 / s so every byte stays <= 255 and the error stays within half a step. Ports 20 and 21 carried
the older 12-bit packed layouts and are not decoded.
"""

from __future__ import annotations

import math

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

__all__ = ["BANDS", "LEVELS", "NAMES", "decode", "encode"]

CODEC = "lorasoundkit"
FPORT = 22
LEVELS = tuple(f"l{w}{stat}_db" for w in "acz" for stat in ("min", "max", "eq"))
BANDS = tuple(
    f"lz_{band}hz_db"
    for band in ("31_5", "63", "125", "250", "500", "1000", "2000", "4000", "8000")
)
NAMES = LEVELS + BANDS


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a LoRaSoundkit uplink; see the module docstring for the layout."""
    check_fport(CODEC, fport, (FPORT,))
    check_payload(CODEC, payload)
    reader = ByteReader(CODEC, payload)
    scale = reader.u8("scale")
    values = {name: reader.u8(name) * scale / 255 for name in NAMES}
    check_consumed(reader, "19-byte layout")
    out = decoded(CODEC, "noise")
    out.values = values
    return out


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """The inverse of :func:`decode`; every one of the 18 levels is required."""
    values = decoded.values
    check_carried(CODEC, values, set(NAMES).__contains__)
    missing = [name for name in NAMES if name not in values]
    if missing:
        raise ValueError(f"{CODEC} always carries all 18 levels; missing {', '.join(missing)}")
    levels = [values[name] for name in NAMES]
    if not all(math.isfinite(v) and v >= 0 for v in levels):
        raise ValueError(f"{CODEC} carries finite levels >= 0 dB only")
    scale = wire_int("scale", max(1.0, math.ceil(max(levels))), 1, 1, 0xFF)
    data = [wire_int(name, values[name], 255 / scale, 0, 0xFF) for name in NAMES]
    return FPORT, bytes([scale, *data])


register(
    Codec(
        name=CODEC,
        kinds=("noise",),
        fports=(FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="LoRaSoundkit (TTN Apeldoorn) LA/LC/LZ min, max, Leq and LZ octave bands",
    )
)
