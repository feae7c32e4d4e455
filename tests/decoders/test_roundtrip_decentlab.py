"""Round trips of the Decentlab codecs: decode(encode(m)) == m within resolution."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import Decoded, DeviceProfile, OutOfRangeError, get_codec
from decoders.codecs import _decentlab as dl
from decoders.codecs import decentlab_dl_ac as ac
from tests.decoders._roundtrip import assert_roundtrip, on_grid, steps_from

PM = "decentlab-dl-pm"
AC = "decentlab-dl-ac"
SHT_T_STEP = 175.72 / 65536
SHT_H_STEP = 125 / 65536
MV_STEP = 3000 / 32768

PM_STEPS = {
    "battery_v": 0.001,
    **{name: 0.1 for name in ("pm1_ugm3", "pm2_5_ugm3", "pm4_ugm3", "pm10_ugm3")},
    "typical_particle_size_nm": 1.0,
    **{f"nc{size}_per_cm3": 0.1 for size in ("0_5", "1", "2_5", "4", "10")},
    "temperature_c": SHT_T_STEP,
    "humidity_pct": SHT_H_STEP,
    "pressure_hpa": 0.02,
}
PM_RANGES = {
    "battery_v": (0.0, 65.535),
    "typical_particle_size_nm": (0.0, 65535.0),
    "temperature_c": (dl.sht_temperature_c(0), dl.sht_temperature_c(0xFFFF)),
    "humidity_pct": (dl.sht_humidity_pct(0), dl.sht_humidity_pct(0xFFFF)),
    "pressure_hpa": (0.0, 1310.7),
}
PM_GROUPS = (
    ("battery_v",),
    (
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
    ),
    ("temperature_c", "humidity_pct"),
    ("pressure_hpa",),
)


@st.composite
def dl_pm_messages(draw: st.DrawFn) -> Decoded:
    values: dict[str, float] = {}
    for names in PM_GROUPS:
        if draw(st.booleans()):
            for name in names:
                values[name] = draw(on_grid(*PM_RANGES.get(name, (0.0, 6553.5))))
    return Decoded(codec=PM, kind="air", values=values)


@given(dl_pm_messages())
def test_dl_pm_roundtrip(message: Decoded) -> None:
    assert_roundtrip(PM, message, steps_from(PM_STEPS))


@pytest.mark.parametrize(
    "values",
    [
        {"battery_v": 70.0},
        {"battery_v": float("inf")},
        {"temperature_c": 20.0},
        {"pressure_hpa": -1.0},
        {"pm1_ugm3": 1.0},
        {"co2_ppm": 400.0},
    ],
)
def test_dl_pm_encoder_rejects(values: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"does not fit|needs|cannot"):
        get_codec(PM).encode(Decoded(codec=PM, kind="air", values=values))


# ---- DL-AC: the vendor's default parameters, with AUX0 (compensated) and without (WE only).
VENDOR_CALIBRATION = {
    "no2_we0_mv": 256,
    "no2_sensitivity_mv_per_ppb": 0.256,
    "no2_aux0_mv": 227,
    "no_we0_mv": 320,
    "no_sensitivity_mv_per_ppb": 0.512,
    "no_aux0_mv": 288,
    "ox_we0_mv": 235,
    "ox_sensitivity_mv_per_ppb": 0.345,
    "ox_aux0_mv": 200,
    "co_we0_mv": 544,
    "co_sensitivity_mv_per_ppb": 0.424,
    "co_aux0_mv": 301,
}
WE_ONLY_CALIBRATION = {k: v for k, v in VENDOR_CALIBRATION.items() if "aux0" not in k}
PROFILES = st.sampled_from(
    [
        DeviceProfile(calibration=VENDOR_CALIBRATION),
        DeviceProfile(calibration=WE_ONLY_CALIBRATION),
        DeviceProfile(),
    ]
)
WORD = st.integers(0, 0xFFFF)


@st.composite
def dl_ac_frames(draw: st.DrawFn) -> bytes:
    groups = {
        bit: [draw(WORD) for _ in range(length)]
        for bit, length in enumerate((2, 2, 2, 2, 2, 1))
        if draw(st.booleans())
    }
    return dl.write_frame(draw(st.integers(0, 0xFFFF)), groups)


@given(dl_ac_frames(), PROFILES)
def test_dl_ac_roundtrip_from_frames(frame: bytes, profile: DeviceProfile) -> None:
    """Every frame decodes to a message the encoder rebuilds exactly (raw mV carry the words)."""
    message = get_codec(AC).decode(frame, 1, profile)
    assert_roundtrip(AC, message, lambda name: 1e-9, profile)


def _ppb_step(gas: str) -> float:
    return MV_STEP / VENDOR_CALIBRATION[f"{gas}_sensitivity_mv_per_ppb"]


CONCENTRATION_STEPS = {
    "no2_ugm3": _ppb_step("no2") * ac.NO2_UGM3_PER_PPB,
    "no_ugm3": _ppb_step("no") * ac.NO_UGM3_PER_PPB,
    "co_mgm3": _ppb_step("co") * ac.CO_MGM3_PER_PPB,
    # O3 = Ox - NO2: both readings round.
    "o3_ugm3": (_ppb_step("ox") + _ppb_step("no2")) * ac.O3_UGM3_PER_PPB,
    "ox_ppb": _ppb_step("ox"),
    "temperature_c": SHT_T_STEP,
    "humidity_pct": SHT_H_STEP,
    "battery_v": 0.001,
}


@st.composite
def dl_ac_concentrations(draw: st.DrawFn) -> Decoded:
    """Messages as a simulator writes them: concentrations only, in the cells' range."""
    values: dict[str, float] = {}
    if draw(st.booleans()):
        values["temperature_c"] = draw(on_grid(-40, 80))
        values["humidity_pct"] = draw(on_grid(0, 100))
    for name, low, high in (("no2_ugm3", -20, 500), ("no_ugm3", -20, 500), ("co_mgm3", -0.1, 5)):
        if draw(st.booleans()):
            values[name] = draw(on_grid(low, high))
    if "no2_ugm3" in values and draw(st.booleans()):
        values["o3_ugm3"] = draw(on_grid(-20, 400))
    if draw(st.booleans()):
        values["battery_v"] = draw(on_grid(0, 65.535))
    return Decoded(codec=AC, kind="air", values=values)


@given(dl_ac_concentrations(), st.sampled_from([VENDOR_CALIBRATION, WE_ONLY_CALIBRATION]))
def test_dl_ac_roundtrip_from_concentrations(
    message: Decoded, calibration: dict[str, float]
) -> None:
    profile = DeviceProfile(calibration=calibration)
    codec = get_codec(AC)
    decoded = codec.decode(codec.encode(message, profile)[1], 1, profile)
    for name, value in message.values.items():
        tolerance = CONCENTRATION_STEPS[name] / 2 + 1e-9 * max(1.0, abs(value))
        assert math.isclose(decoded.values[name], value, abs_tol=tolerance), name


def test_dl_ac_concentration_without_calibration_is_rejected() -> None:
    message = Decoded(codec=AC, kind="air", values={"no2_ugm3": 40.0})
    with pytest.raises(ValueError, match="calibration"):
        get_codec(AC).encode(message)


def test_dl_ac_o3_needs_no2() -> None:
    message = Decoded(codec=AC, kind="air", values={"o3_ugm3": 40.0})
    with pytest.raises(ValueError, match="NO2"):
        get_codec(AC).encode(message, DeviceProfile(calibration=VENDOR_CALIBRATION))


def test_dl_ac_missing_calibration_key_names_it() -> None:
    frame = dl.write_frame(1, {1: [0x8966, 0x803C]})
    profile = DeviceProfile(calibration={"no2_sensitivity_mv_per_ppb": 0.256})
    with pytest.raises(OutOfRangeError, match="no2_we0_mv"):
        get_codec(AC).decode(frame, 1, profile)
