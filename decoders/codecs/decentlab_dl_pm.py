"""Decentlab DL-PM: particulate matter (Sensirion SPS30), air temperature, humidity and pressure.

Source: Decentlab's decoder ``vendor/decentlab/dl-pm.js`` and its examples in
``vendor/decentlab/dl-pm-codec.yaml`` (TheThingsNetwork/lorawan-devices);
docs/payload-formats.md#decentlab-dl-pm. Protocol v2 framing (see ``_decentlab``), fPort 1, u16 BE
words:

| flag bit | words | values |
|---|---|---|
| 0 | 1 | battery = w / 1000 V |
| 1 | 10 | PM1, PM2.5, PM4, PM10 mass = w / 10 µg/m³; typical particle size = w nm; number
  concentrations PM0.5, PM1, PM2.5, PM4, PM10 = w / 10 per cm³ |
| 2 | 2 | air temperature = 175.72·w/65536 - 46.85 °C; humidity = 125·w/65536 - 6 % |
| 3 | 1 | pressure = w · 2 Pa |

Names: the masses are the canonical ``pm1_ugm3`` … ``pm10_ugm3``; number concentrations use
Sensirion's datasheet abbreviation NC (``nc0_5_per_cm3`` … ``nc10_per_cm3``) so they cannot be
mistaken for masses; ``typical_particle_size_nm``; pressure is converted to ``pressure_hpa``.
"""

from __future__ import annotations

from typing import Final

from decoders._model import Decoded, DeviceProfile
from decoders._registry import Codec, register
from decoders.codecs import _decentlab as dl
from decoders.codecs._fields import decoded

__all__ = ["CODEC", "decode", "encode"]

NAME: Final = "decentlab-dl-pm"
# Final and of variable length: mypyc then reads them as constants, and indexes them without
# first boxing a fixed-length tuple (which it does per access for a plain ``(1, 10, 2, 1)``).
_GROUP_LENGTHS: Final[tuple[int, ...]] = (1, 10, 2, 1)
_PM_NAMES: Final[tuple[str, ...]] = (
    "pm1_ugm3",
    "pm2_5_ugm3",
    "pm4_ugm3",
    "pm10_ugm3",
    "typical_particle_size_nm",
    "nc0_5_per_cm3",
    "nc1_per_cm3",
    "nc2_5_per_cm3",
    "nc4_per_cm3",
    "nc10_per_cm3",
)
#: Word scale of each PM group value: value = word / scale.
_PM_SCALES: Final[tuple[int, ...]] = (10, 10, 10, 10, 1, 10, 10, 10, 10, 10)
_GROUP_NAMES: dict[int, tuple[str, ...]] = {
    0: ("battery_v",),
    1: _PM_NAMES,
    2: ("temperature_c", "humidity_pct"),
    3: ("pressure_hpa",),
}


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a DL-PM v2 frame into canonical air-quality values."""
    dl.check_fport(NAME, fport)
    frame = dl.read_frame(NAME, payload, _GROUP_LENGTHS)
    groups = frame.groups
    values: dict[str, float] = {}
    if words := groups[0]:
        values["battery_v"] = words[0] / 1000
    if words := groups[1]:
        for index in range(len(_PM_NAMES)):
            values[_PM_NAMES[index]] = words[index] / _PM_SCALES[index]
    if words := groups[2]:
        values["temperature_c"] = dl.sht_temperature_c(words[0])
        values["humidity_pct"] = dl.sht_humidity_pct(words[1])
    if words := groups[3]:
        values["pressure_hpa"] = words[0] * 2 / 100
    out = decoded(NAME, "air")
    out.values = values
    out.partial = frame.partial
    return out


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """Build the DL-PM frame carrying ``decoded``; a group is sent when all its values are set."""
    values = decoded.values
    if decoded.counts or decoded.regions:
        raise ValueError(f"{NAME} carries no counts or regions")
    known = {name for names in _GROUP_NAMES.values() for name in names}
    if unknown := sorted(set(values) - known):
        raise ValueError(f"{NAME} cannot carry {unknown}")
    for bit, names in _GROUP_NAMES.items():
        present = [name in values for name in names]
        if any(present) and not all(present):
            raise ValueError(f"{NAME} group {bit} needs all of {names}")
    groups: dict[int, list[int]] = {}
    if "battery_v" in values:
        groups[0] = [dl.to_word(values["battery_v"] * 1000, "battery_v")]
    if "pm1_ugm3" in values:
        groups[1] = [
            dl.to_word(values[name] * scale, name)
            for name, scale in zip(_PM_NAMES, _PM_SCALES, strict=True)
        ]
    if "temperature_c" in values:
        groups[2] = [
            dl.sht_temperature_word(values["temperature_c"]),
            dl.sht_humidity_word(values["humidity_pct"]),
        ]
    if "pressure_hpa" in values:
        groups[3] = [dl.to_word(values["pressure_hpa"] * 100 / 2, "pressure_hpa")]
    return dl.FPORT, dl.write_frame(dl.ENCODER_DEVICE_ID, groups)


CODEC = register(
    Codec(
        name=NAME,
        kinds=("air",),
        fports=(dl.FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Decentlab DL-PM particulate matter, temperature, humidity, pressure (v2)",
    )
)
