"""Decentlab DL-AC air quality station: NO2, NO, Ox and CO electrochemical cells.

Source: Decentlab's reference decoders for the "air quality station NO2, NO, CO, Ox for LoRaWAN"
(https://www.decentlab.com/products/air-quality-station-no2-no-co-ox-for-lorawan, JS/Python versions
with device-specific ``PARAMETERS``) and docs/payload-formats.md#decentlab-dl-ac. Protocol v2
framing (see ``_decentlab``), fPort 1, u16 BE words:

| flag bit | words | values |
|---|---|---|
| 0 | 2 | air temperature = 175.72·w/65536 - 46.85 °C; humidity = 125·w/65536 - 6 % |
| 1 | 2 | NO2: working electrode (WE) mV, WE - auxiliary electrode (AUX) mV |
| 2 | 2 | NO: same two channels |
| 3 | 2 | Ox (O3 + NO2): same two channels |
| 4 | 2 | CO: same two channels |
| 5 | 1 | battery = w / 1000 V |

Each electrode channel is mV = 3·(w/32768 - 1)·1000. The vendor labels the second word "we-aux" and
computes its concentration as (mV - WE0 + AUX0) / S, so it is the WE - AUX difference, not the
auxiliary electrode alone; we follow the vendor. Raw channels are always reported as ``<gas>_we_mv``
and ``<gas>_we_minus_aux_mv`` so readings can be recalibrated later.

Calibration (``profile.calibration``, per device, from the sensor's calibration sheet), for each
gas prefix ``no2``, ``no``, ``ox``, ``co``:

- ``<gas>_we0_mv``: WE zero offset (vendor ``<GAS>_WE_0``), required;
- ``<gas>_sensitivity_mv_per_ppb``: sensitivity S (vendor ``<GAS>_S``), required, non-zero;
- ``<gas>_aux0_mv``: AUX zero offset (vendor ``<GAS>_AUX_0``), optional.

Rule: with the two required keys, ppb = (WE - WE0) / S (docs/payload-formats.md#decentlab-dl-ac);
when ``aux0`` is also given, the auxiliary-compensated ppb = ((WE - AUX) - (WE0 - AUX0)) / S is used
instead (vendor's "concentration (we-aux)", the correction Alphasense recommends). A gas with no
calibration key at all reports only its raw mV. Some keys but not both required ones, a zero or
non-finite constant, or a non-finite concentration raise ``OutOfRangeError`` naming the key: a
registry mistake that is worth a dead letter (replayable once fixed) rather than silently missing
gases.

Conversions at 20 °C and 1013.25 hPa (docs/architecture.md#quantity-names, the EU air quality
directive's reference): 1 ppb NO2 = 1.913 µg/m³ → ``no2_ugm3``; 1 ppm CO = 1.164 mg/m³ →
``co_mgm3``; 1 ppb NO = 1.247 µg/m³ → ``no_ugm3`` (no canonical name; M(NO) = 30.006 g/mol over the
ideal-gas molar volume R·293.15 K/101325 Pa = 24.055 L/mol). The Ox cell answers to O3 + NO2, so its
reading is kept as ``ox_ppb`` and, when NO2 is in the same frame and calibrated,
``o3_ugm3`` = (Ox - NO2) ppb x 1.996 (1 ppm O3 = 1996 µg/m³). Values are not clamped: these
cells are noisy and legitimately read slightly negative near zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from decoders._model import Decoded, DeviceProfile, OutOfRangeError
from decoders._registry import Codec, register
from decoders.codecs import _decentlab as dl
from decoders.codecs._fields import decoded

__all__ = ["CODEC", "decode", "encode"]

NAME: Final = "decentlab-dl-ac"
#: Final and of variable length, so that compiled code reads it as a constant, unboxed.
_GROUP_LENGTHS: Final[tuple[int, ...]] = (2, 2, 2, 2, 2, 1)
#: Gas prefix → flag bit; NO2 comes before Ox, whose O3 share needs the NO2 reading.
_GAS_BITS: dict[str, int] = {"no2": 1, "no": 2, "ox": 3, "co": 4}
NO2_UGM3_PER_PPB = 1.913
NO_UGM3_PER_PPB = 1.247
O3_UGM3_PER_PPB = 1.996
CO_MGM3_PER_PPB = 1.164e-3
#: Canonical concentration name and factor from ppb, per gas (Ox is handled apart).
_MASS: dict[str, tuple[str, float]] = {
    "no2": ("no2_ugm3", NO2_UGM3_PER_PPB),
    "no": ("no_ugm3", NO_UGM3_PER_PPB),
    "co": ("co_mgm3", CO_MGM3_PER_PPB),
}


@dataclass(frozen=True, slots=True)
class _Cell:
    """One gas's calibration: WE zero, sensitivity and the optional AUX zero (mV, mV/ppb)."""

    we0: float
    sensitivity: float
    aux0: float | None

    def ppb(self, we_mv: float, diff_mv: float) -> float:
        if self.aux0 is None:
            return (we_mv - self.we0) / self.sensitivity
        return (diff_mv - (self.we0 - self.aux0)) / self.sensitivity

    def channels_mv(self, ppb: float) -> tuple[float, float]:
        """WE and WE - AUX channels giving ``ppb``; AUX sits at AUX0 (0 mV when not calibrated)."""
        we_mv = self.we0 + self.sensitivity * ppb
        return we_mv, we_mv - (self.aux0 or 0.0)


#: Parsed calibrations by the identity of the registry's mapping (which lives as long as the
#: registry): parsing per frame cost more than decoding it. Holds the mapping to pin its id.
_CELLS: Final[dict[int, tuple[Mapping[str, float], dict[str, _Cell | None]]]] = {}


def _cell(calibration: Mapping[str, float], gas: str) -> _Cell | None:
    cached = _CELLS.get(id(calibration))
    if cached is None or cached[0] is not calibration:
        if len(_CELLS) > 10_000:  # registries reloaded many times: start over
            _CELLS.clear()
        cached = (calibration, {})
        _CELLS[id(calibration)] = cached
    cells = cached[1]
    if gas not in cells:
        cells[gas] = _parse_cell(calibration, gas)
    return cells[gas]


def _parse_cell(calibration: Mapping[str, float], gas: str) -> _Cell | None:
    keys = [f"{gas}_we0_mv", f"{gas}_sensitivity_mv_per_ppb", f"{gas}_aux0_mv"]
    if not any(key in calibration for key in keys):
        return None
    for key in keys[:2]:
        if key not in calibration:
            raise OutOfRangeError(NAME, None, f"calibration for {gas} lacks {key}")
    we0, sensitivity = calibration[keys[0]], calibration[keys[1]]
    aux0 = calibration.get(keys[2])
    for key, value in zip(keys, (we0, sensitivity, aux0), strict=True):
        if value is not None and not math.isfinite(value):
            raise OutOfRangeError(NAME, None, f"calibration {key} is {value}")
    if sensitivity == 0:
        raise OutOfRangeError(NAME, None, f"calibration {keys[1]} is zero")
    return _Cell(we0, sensitivity, aux0)


#: Per gas, in ``_GAS_BITS`` order: prefix, flag bit and the names of its two raw channels.
_GAS_CHANNELS: Final[tuple[tuple[str, int, str, str], ...]] = tuple(
    (gas, bit, f"{gas}_we_mv", f"{gas}_we_minus_aux_mv") for gas, bit in _GAS_BITS.items()
)
#: ``_MASS`` as (gas, name, factor), in its order.
_MASS_ORDER: Final[tuple[tuple[str, str, float], ...]] = tuple(
    (gas, name, factor) for gas, (name, factor) in _MASS.items()
)


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode a DL-AC v2 frame; gas concentrations need the device's calibration."""
    dl.check_fport(NAME, fport)
    frame = dl.read_frame(NAME, payload, _GROUP_LENGTHS)
    groups = frame.groups
    values: dict[str, float] = {}
    if words := groups[0]:
        values["temperature_c"] = dl.sht_temperature_c(words[0])
        values["humidity_pct"] = dl.sht_humidity_pct(words[1])
    ppb: dict[str, float] = {}
    for gas, bit, we_name, diff_name in _GAS_CHANNELS:
        if not (words := groups[bit]):
            continue
        we_mv, diff_mv = dl.electrode_mv(words[0]), dl.electrode_mv(words[1])
        values[we_name] = we_mv
        values[diff_name] = diff_mv
        if cell := _cell(profile.calibration, gas):
            concentration = cell.ppb(we_mv, diff_mv)
            ppb[gas] = concentration
            if not math.isfinite(concentration):
                raise OutOfRangeError(NAME, None, f"{gas} calibration gives {concentration} ppb")
    if ppb:
        for gas, name, factor in _MASS_ORDER:
            if gas in ppb:
                values[name] = ppb[gas] * factor
        if "ox" in ppb:
            values["ox_ppb"] = ppb["ox"]
            if "no2" in ppb:
                values["o3_ugm3"] = (ppb["ox"] - ppb["no2"]) * O3_UGM3_PER_PPB
    if words := groups[5]:
        values["battery_v"] = words[0] / 1000
    out = decoded(NAME, "air")
    out.values = values
    out.partial = frame.partial
    return out


def _gas_names(gas: str) -> tuple[str, ...]:
    mass = ("ox_ppb", "o3_ugm3") if gas == "ox" else (_MASS[gas][0],)
    return (f"{gas}_we_mv", f"{gas}_we_minus_aux_mv", *mass)


def _target_ppb(gas: str, values: Mapping[str, float], ppb: Mapping[str, float]) -> float | None:
    """The concentration ``values`` asks for, in ppb; None when it names none for ``gas``."""
    if gas != "ox":
        name, factor = _MASS[gas]
        return values[name] / factor if name in values else None
    if "ox_ppb" in values:
        return values["ox_ppb"]
    if "o3_ugm3" not in values:
        return None
    if "no2" not in ppb:
        raise ValueError(f"{NAME}: o3_ugm3 without NO2 cannot be turned into an Ox reading")
    return values["o3_ugm3"] / O3_UGM3_PER_PPB + ppb["no2"]


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """Build the DL-AC frame for ``decoded``.

    A gas's words come from its raw ``*_mv`` values when both are present (they are what the wire
    carries); otherwise from its concentration through the profile's calibration.
    """
    values = decoded.values
    if decoded.counts or decoded.regions:
        raise ValueError(f"{NAME} carries no counts or regions")
    known = {"temperature_c", "humidity_pct", "battery_v"}
    known.update(name for gas in _GAS_BITS for name in _gas_names(gas))
    if unknown := sorted(set(values) - known):
        raise ValueError(f"{NAME} cannot carry {unknown}")
    groups: dict[int, list[int]] = {}
    if ("temperature_c" in values) != ("humidity_pct" in values):
        raise ValueError(f"{NAME} sends temperature_c and humidity_pct together")
    if "temperature_c" in values:
        groups[0] = [
            dl.sht_temperature_word(values["temperature_c"]),
            dl.sht_humidity_word(values["humidity_pct"]),
        ]
    ppb: dict[str, float] = {}
    for gas, bit in _GAS_BITS.items():
        we_name, diff_name = f"{gas}_we_mv", f"{gas}_we_minus_aux_mv"
        cell = _cell(profile.calibration, gas)
        if we_name in values and diff_name in values:
            channels = values[we_name], values[diff_name]
            if cell is not None:
                ppb[gas] = cell.ppb(*channels)
        elif (target := _target_ppb(gas, values, ppb)) is not None:
            if cell is None:
                raise ValueError(f"{NAME}: {gas} concentration needs {gas}_* calibration")
            ppb[gas] = target
            channels = cell.channels_mv(target)
        elif we_name in values or diff_name in values:
            raise ValueError(f"{NAME}: {gas} needs both {we_name} and {diff_name}")
        else:
            continue
        groups[bit] = [dl.electrode_word(mv) for mv in channels]
    if "battery_v" in values:
        groups[5] = [dl.to_word(values["battery_v"] * 1000, "battery_v")]
    return dl.FPORT, dl.write_frame(dl.ENCODER_DEVICE_ID, groups)


CODEC = register(
    Codec(
        name=NAME,
        kinds=("air",),
        fports=(dl.FPORT,),
        decode_fn=decode,
        encode_fn=encode,
        description="Decentlab DL-AC NO2/NO/Ox/CO electrochemical air quality station (v2)",
    )
)
