"""The city indicators against hand-computed tables (streams/_indicators.py).

Every expected value below was worked out by hand from the formula in the function's docstring;
the comments give the arithmetic. Times are written as local ISO strings with their offset, so
a reader can check them against a calendar.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from streams._indicators import (
    AFFLUENCE_LABELS,
    DEFAULT_AFFLUENCE_THRESHOLDS_PCT,
    EAQI_BANDS,
    EAQI_LABELS,
    U16_MODULUS,
    U32_MODULUS,
    CounterStep,
    LocalDay,
    affluence_level,
    bin_level_db,
    counter_delta,
    day_start_us,
    eaqi_band,
    eaqi_pollutant_band,
    energetic_mean_db,
    exceeded_level_db,
    lden_db,
    level_bin,
    level_from_energy,
    local_day,
    max_daily_8h_mean,
    noise_period,
    occupancy_pct,
)

HOUR_US = 3_600_000_000


def at(iso: str) -> int:
    """µs since the epoch of an ISO time with an explicit offset."""
    moment = datetime.fromisoformat(iso)
    assert moment.tzinfo is not None
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


# ---------------------------------------------------------------------------------------------
# Level bins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level_db", "expected_bin"),
    [
        (65.4, 654),
        (65.44, 654),
        (65.46, 655),
        # Exact halves (exactly representable floats) round up, unlike round()'s half-to-even:
        (65.25, 653),  # 652.5 + 0.5 = 653.0
        (65.75, 658),  # 657.5 + 0.5 = 658.0
        (-0.25, -2),  # -2.5 + 0.5 = -2.0 (up, towards +inf)
        (-0.75, -7),  # -7.5 + 0.5 = -7.0
        (0.0, 0),
        (120.0, 1200),
    ],
)
def test_level_bin_rounds_half_up(level_db, expected_bin):
    assert level_bin(level_db) == expected_bin


@pytest.mark.parametrize(
    ("bin_index", "expected_db"), [(654, 65.4), (0, 0.0), (-2, -0.2), (1200, 120.0)]
)
def test_bin_level_db(bin_index, expected_db):
    assert bin_level_db(bin_index) == expected_db


# ---------------------------------------------------------------------------------------------
# Energetic means
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels_db", "durations_s", "expected_db"),
    [
        # 10·log10((10^6 + 10^7) / 2) = 10·log10(5.5e6) = 67.4036
        ((60.0, 70.0), (1.0, 1.0), 67.4036),
        # the weights matter: 10·log10((3·10^6 + 10^7) / 4) = 10·log10(3.25e6) = 65.1188
        ((60.0, 70.0), (3.0, 1.0), 65.1188),
        # 10·log10((10^6 + 3·10^7) / 4) = 10·log10(7.75e6) = 68.8930
        ((60.0, 70.0), (1.0, 3.0), 68.8930),
        # 10·log10((10^5 + 10^6 + 10^7) / 3) = 10·log10(3.7e6) = 65.6820
        ((50.0, 60.0, 70.0), (10.0, 10.0, 10.0), 65.6820),
        # the same level stays itself
        ((55.0, 55.0), (2.0, 7.0), 55.0),
        # a zero-duration level has no weight, however loud
        ((90.0, 60.0), (0.0, 10.0), 60.0),
        # 10·log10((10^0 + 10^1) / 2) = 10·log10(5.5) = 7.4036
        ((0.0, 10.0), (5.0, 5.0), 7.4036),
        # very loud levels do not overflow: 3000 + 10·log10(5.5) = 3007.4036
        ((3000.0, 3010.0), (1.0, 1.0), 3007.4036),
    ],
)
def test_energetic_mean_db(levels_db, durations_s, expected_db):
    result = energetic_mean_db(levels_db, durations_s)
    assert result == pytest.approx(expected_db, abs=5e-5)


@pytest.mark.parametrize(
    ("levels_db", "durations_s"), [((), ()), ((60.0,), (0.0,)), ((60.0, 70.0), (0.0, 0.0))]
)
def test_energetic_mean_db_of_nothing_is_none(levels_db, durations_s):
    assert energetic_mean_db(levels_db, durations_s) is None


@pytest.mark.parametrize(
    ("levels_db", "durations_s"), [((60.0, 70.0), (1.0,)), ((60.0, 70.0), (1.0, -1.0))]
)
def test_energetic_mean_db_rejects_bad_durations(levels_db, durations_s):
    with pytest.raises(ValueError, match=r"levels for|negative"):
        energetic_mean_db(levels_db, durations_s)


@pytest.mark.parametrize(
    ("energy_sum", "duration_s", "expected_db"),
    [
        # 2 s at 60 dB + 2 s at 70 dB: 2·10^6 + 2·10^7 = 2.2e7 over 4 s = 5.5e6 → 67.4036
        (2.2e7, 4.0, 67.4036),
        (1e6, 1.0, 60.0),
        (1e6, 10.0, 50.0),  # the same energy spread over 10 s is 10 dB lower
    ],
)
def test_level_from_energy(energy_sum, duration_s, expected_db):
    assert level_from_energy(energy_sum, duration_s) == pytest.approx(expected_db, abs=5e-5)


def test_level_from_energy_round_trips_energetic_mean():
    levels, durations = (52.3, 61.0, 58.7), (12.0, 3.0, 45.0)
    energy = sum(t * 10 ** (level / 10) for level, t in zip(levels, durations, strict=True))
    assert level_from_energy(energy, sum(durations)) == pytest.approx(
        energetic_mean_db(levels, durations), abs=1e-9
    )


@pytest.mark.parametrize(
    ("energy_sum", "duration_s"), [(1e6, 0.0), (1e6, -1.0), (0.0, 10.0), (-1.0, 10.0)]
)
def test_level_from_energy_without_a_level_is_none(energy_sum, duration_s):
    assert level_from_energy(energy_sum, duration_s) is None


# ---------------------------------------------------------------------------------------------
# Exceeded levels L_N
# ---------------------------------------------------------------------------------------------

SINGLE = {654: 30.0}
# 70 dB for 1 s, 60 dB for 3 s (total 4 s), inserted lowest first: the walk sorts the bins.
TWO_UNEQUAL = {600: 3.0, 700: 1.0}
# 70 dB 2 s, 65 dB 2 s, 60 dB 6 s (total 10 s).
THREE = {600: 6.0, 650: 2.0, 700: 2.0}


@pytest.mark.parametrize(
    ("histogram", "percent", "expected_db"),
    [
        (SINGLE, 0.0, 65.4),
        (SINGLE, 10.0, 65.4),
        (SINGLE, 50.0, 65.4),
        (SINGLE, 90.0, 65.4),
        (SINGLE, 100.0, 65.4),
        # TWO_UNEQUAL: from the top, 70 dB brings the accumulation to 1 s (25 %), 60 dB to 4 s.
        (TWO_UNEQUAL, 10.0, 70.0),  # target 0.4 s, reached at 70 dB
        (TWO_UNEQUAL, 25.0, 70.0),  # target 1.0 s, reached exactly at 70 dB (tie → higher bin)
        (TWO_UNEQUAL, 26.0, 60.0),  # target 1.04 s, not reached before 60 dB
        (TWO_UNEQUAL, 50.0, 60.0),
        (TWO_UNEQUAL, 90.0, 60.0),
        (TWO_UNEQUAL, 100.0, 60.0),
        # THREE: accumulation 2 s (20 %) at 70, 4 s (40 %) at 65, 10 s at 60.
        (THREE, 10.0, 70.0),
        (THREE, 20.0, 70.0),  # tie at 2 s
        (THREE, 30.0, 65.0),
        (THREE, 40.0, 65.0),  # tie at 4 s
        (THREE, 41.0, 60.0),
        (THREE, 90.0, 60.0),
        # a zero-duration bin is not part of the distribution, even at the top
        ({800: 0.0, 600: 5.0}, 0.0, 60.0),
        # Float noise: 0.1 + 0.7 = 0.7999999999999999 < 0.8 = 80 % of 1.0; the tolerance makes
        # the accumulation reach 80 % at 65 dB, as it does in exact arithmetic.
        ({700: 0.1, 650: 0.7, 600: 0.2}, 80.0, 65.0),
    ],
)
def test_exceeded_level_db(histogram, percent, expected_db):
    assert exceeded_level_db(histogram, percent) == expected_db


def test_exceeded_levels_are_ordered():
    histogram = {550: 10.0, 580: 25.0, 610: 40.0, 640: 15.0, 700: 10.0}
    l10, l50, l90 = (exceeded_level_db(histogram, p) for p in (10.0, 50.0, 90.0))
    # accumulations from the top: 10, 25, 65, 90, 100 → L10 = 70.0, L50 = 61.0, L90 = 58.0
    assert (l10, l50, l90) == (70.0, 61.0, 58.0)


@pytest.mark.parametrize("histogram", [{}, {600: 0.0}, {600: 0.0, 700: 0.0}])
def test_exceeded_level_db_without_duration_is_none(histogram):
    assert exceeded_level_db(histogram, 50.0) is None


@pytest.mark.parametrize(
    ("histogram", "percent"), [({600: 1.0}, -0.1), ({600: 1.0}, 100.1), ({600: -1.0}, 50.0)]
)
def test_exceeded_level_db_rejects_bad_input(histogram, percent):
    with pytest.raises(ValueError, match=r"percent|negative"):
        exceeded_level_db(histogram, percent)


# ---------------------------------------------------------------------------------------------
# Lden
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ld", "le", "ln", "hours", "expected_db"),
    [
        # Normal day, Ld = Le = Ln = 60:
        # 60 + 10·log10((12 + 4·10^0.5 + 8·10^1) / 24) = 60 + 10·log10((12 + 12.6491 + 80) / 24)
        # = 60 + 10·log10(4.36038) = 60 + 6.3952 = 66.3952
        (60.0, 60.0, 60.0, (12.0, 4.0, 8.0), 66.3952),
        # the penalties make 70 / 65 / 60 equal to 70 in every period → 70
        (70.0, 65.0, 60.0, (12.0, 4.0, 8.0), 70.0),
        # Spring forward (night 7 h): 60 + 10·log10((12 + 12.6491 + 70) / 23)
        # = 60 + 10·log10(4.11518) = 66.1439
        (60.0, 60.0, 60.0, (12.0, 4.0, 7.0), 66.1439),
        # Fall back (night 9 h): 60 + 10·log10((12 + 12.6491 + 90) / 25)
        # = 60 + 10·log10(4.58596) = 66.6143
        (60.0, 60.0, 60.0, (12.0, 4.0, 9.0), 66.6143),
        # A quiet night weighs little: 10·log10((12·10^6.5 + 4·10^6.5 + 8·10^4) / 24)
        # = 10·log10((37947332 + 12649111 + 80000) / 24) = 10·log10(2111518.5) = 63.2459
        (65.0, 60.0, 30.0, (12.0, 4.0, 8.0), 63.2459),
    ],
)
def test_lden_db(ld, le, ln, hours, expected_db):
    assert lden_db(ld, le, ln, *hours) == pytest.approx(expected_db, abs=5e-5)


def test_lden_db_defaults_are_the_directive_periods():
    assert lden_db(60.0, 60.0, 60.0) == lden_db(60.0, 60.0, 60.0, 12.0, 4.0, 8.0)


@pytest.mark.parametrize("hours", [(0.0, 0.0, 0.0), (12.0, -4.0, 8.0)])
def test_lden_db_rejects_bad_period_lengths(hours):
    with pytest.raises(ValueError, match="period lengths"):
        lden_db(60.0, 60.0, 60.0, *hours)


# ---------------------------------------------------------------------------------------------
# Local days and noise periods (Europe/Paris, 2026)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        # summer (CEST, UTC+2): midnight is 22:00Z the day before
        (
            "2026-07-15T12:00:00+02:00",
            LocalDay(
                at("2026-07-14T22:00:00+00:00"), at("2026-07-15T22:00:00+00:00"), 12.0, 4.0, 8.0
            ),
        ),
        # winter (CET, UTC+1)
        (
            "2026-01-15T00:00:00+01:00",
            LocalDay(
                at("2026-01-14T23:00:00+00:00"), at("2026-01-15T23:00:00+00:00"), 12.0, 4.0, 8.0
            ),
        ),
        # spring forward 2026-03-29: 02:00 CET jumps to 03:00 CEST; 23 hours, night 6 + 1 = 7
        (
            "2026-03-29T12:00:00+02:00",
            LocalDay(
                at("2026-03-28T23:00:00+00:00"), at("2026-03-29T22:00:00+00:00"), 12.0, 4.0, 7.0
            ),
        ),
        # fall back 2026-10-25: 03:00 CEST back to 02:00 CET; 25 hours, night 8 + 1 = 9
        (
            "2026-10-25T12:00:00+01:00",
            LocalDay(
                at("2026-10-24T22:00:00+00:00"), at("2026-10-25T23:00:00+00:00"), 12.0, 4.0, 9.0
            ),
        ),
        # during the repeated hour (second 02:30, CET) it is still 2026-10-25
        (
            "2026-10-25T02:30:00+01:00",
            LocalDay(
                at("2026-10-24T22:00:00+00:00"), at("2026-10-25T23:00:00+00:00"), 12.0, 4.0, 9.0
            ),
        ),
    ],
)
def test_local_day(instant, expected):
    day = local_day(at(instant))
    assert day == expected
    assert (day.end_us - day.start_us) / HOUR_US == (
        day.day_hours + day.evening_hours + day.night_hours
    )


def test_local_day_is_half_open():
    day = local_day(at("2026-03-29T12:00:00+02:00"))
    assert local_day(day.start_us) == day
    assert local_day(day.end_us - 1) == day
    assert local_day(day.end_us).start_us == day.end_us
    assert local_day(day.start_us - 1).end_us == day.start_us


@pytest.mark.parametrize(
    "instant",
    [
        "2026-07-15T12:00:00+02:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T01:59:59+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T23:59:59+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T23:59:59+01:00",
        "2026-10-26T00:00:00+01:00",
    ],
)
def test_day_start_us_matches_local_day(instant):
    assert day_start_us(at(instant)) == local_day(at(instant)).start_us


def test_day_start_us_in_another_zone():
    new_york = ZoneInfo("America/New_York")
    # 2026-07-15 03:00Z is 2026-07-14 23:00 EDT: the day started at 2026-07-14 04:00Z
    assert day_start_us(at("2026-07-15T03:00:00+00:00"), new_york) == at(
        "2026-07-14T04:00:00+00:00"
    )


_PERIOD_LETTER = {"day": "D", "evening": "E", "night": "N"}


@pytest.mark.parametrize(
    ("first_hour_utc", "hours", "expected"),
    [
        # Normal summer day: local 00..06 night (7), 07..18 day (12), 19..22 evening (4), 23 night.
        ("2026-07-14T22:00:00+00:00", 24, "NNNNNNN" + "D" * 12 + "EEEE" + "N"),
        # Spring forward 2026-03-29, UTC hours 23Z..21Z: local 00, 01 (CET), then 03, 04, 05, 06
        # (CEST) night; 07..18 = 05Z..16Z day; 19..22 = 17Z..20Z evening; 23 = 21Z night.
        ("2026-03-28T23:00:00+00:00", 23, "NNNNNN" + "D" * 12 + "EEEE" + "N"),
        # Fall back 2026-10-25, UTC hours 22Z..22Z: local 00, 01, 02 (CEST), 02, 03, 04, 05, 06
        # (CET) night; 07..18 = 06Z..17Z day; 19..22 = 18Z..21Z evening; 23 = 22Z night.
        ("2026-10-24T22:00:00+00:00", 25, "NNNNNNNN" + "D" * 12 + "EEEE" + "N"),
    ],
)
def test_noise_period_of_each_utc_hour(first_hour_utc, hours, expected):
    start = at(first_hour_utc)
    letters = "".join(_PERIOD_LETTER[noise_period(start + h * HOUR_US)] for h in range(hours))
    assert letters == expected
    day = local_day(start)
    assert (letters.count("D"), letters.count("E"), letters.count("N")) == (
        day.day_hours,
        day.evening_hours,
        day.night_hours,
    )


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2026-07-15T06:59:59+02:00", "night"),
        ("2026-07-15T07:00:00+02:00", "day"),
        ("2026-07-15T18:59:59+02:00", "day"),
        ("2026-07-15T19:00:00+02:00", "evening"),
        ("2026-07-15T22:59:59+02:00", "evening"),
        ("2026-07-15T23:00:00+02:00", "night"),
        ("2026-07-16T00:00:00+02:00", "night"),
    ],
)
def test_noise_period_boundaries(instant, expected):
    assert noise_period(at(instant)) == expected


@pytest.mark.parametrize(
    ("instant", "expected_db"),
    [
        ("2026-07-15T12:00:00+02:00", 66.3952),  # 12/4/8, see test_lden_db
        ("2026-03-29T12:00:00+02:00", 66.1439),  # 12/4/7
        ("2026-10-25T12:00:00+01:00", 66.6143),  # 12/4/9
    ],
)
def test_lden_over_local_days(instant, expected_db):
    day = local_day(at(instant))
    lden = lden_db(60.0, 60.0, 60.0, day.day_hours, day.evening_hours, day.night_hours)
    assert lden == pytest.approx(expected_db, abs=5e-5)


# ---------------------------------------------------------------------------------------------
# European Air Quality Index (EEA, 2024 bands)
# ---------------------------------------------------------------------------------------------

# The 2024 table (ETC HE Report 2024/17), written out again so the constant is checked.
EXPECTED_BOUNDS = {
    "pm2_5_ugm3": (5.0, 15.0, 50.0, 90.0, 140.0),
    "pm10_ugm3": (15.0, 45.0, 120.0, 195.0, 270.0),
    "no2_ugm3": (10.0, 25.0, 60.0, 100.0, 150.0),
    "o3_ugm3": (60.0, 100.0, 120.0, 160.0, 180.0),
    "so2_ugm3": (20.0, 40.0, 125.0, 190.0, 275.0),
}


def test_eaqi_table_is_the_2024_revision():
    assert dict(EAQI_BANDS) == EXPECTED_BOUNDS
    assert EAQI_LABELS == ("good", "fair", "moderate", "poor", "very poor", "extremely poor")


# Just below, on and just above every bound: a value on a bound is in the lower band.
EDGE_CASES = [
    pytest.param(quantity, value, band, id=f"{quantity}-{value}")
    for quantity, bounds in EXPECTED_BOUNDS.items()
    for index, bound in enumerate(bounds)
    for value, band in ((bound - 0.01, index + 1), (bound, index + 1), (bound + 0.01, index + 2))
]


@pytest.mark.parametrize(("quantity", "concentration", "expected_band"), EDGE_CASES)
def test_eaqi_pollutant_band_edges(quantity, concentration, expected_band):
    assert eaqi_pollutant_band(quantity, concentration) == expected_band


@pytest.mark.parametrize(
    ("quantity", "concentration", "expected_band"),
    [
        ("pm2_5_ugm3", 0.0, 1),
        ("pm2_5_ugm3", -3.0, 1),  # negative counts as 0
        ("no2_ugm3", -0.0, 1),
        ("o3_ugm3", 1e9, 6),
        ("so2_ugm3", math.inf, 6),
        ("pm10_ugm3", 44.0, 2),
    ],
)
def test_eaqi_pollutant_band_extremes(quantity, concentration, expected_band):
    assert eaqi_pollutant_band(quantity, concentration) == expected_band


def test_eaqi_pollutant_band_unknown_quantity():
    with pytest.raises(KeyError):
        eaqi_pollutant_band("pm25", 10.0)


def test_eaqi_pollutant_band_nan():
    with pytest.raises(ValueError, match="NaN"):
        eaqi_pollutant_band("o3_ugm3", math.nan)


@pytest.mark.parametrize(
    ("means", "expected_band"),
    [
        # PM2.5 4 → 1, NO2 70 → 4 (60 < 70 <= 100), O3 30 → 1: the worst is NO2's 4
        ({"pm2_5_ugm3": 4.0, "no2_ugm3": 70.0, "o3_ugm3": 30.0}, 4),
        # SO2 300 → 6 beats PM10 10 → 1
        ({"so2_ugm3": 300.0, "pm10_ugm3": 10.0}, 6),
        # other keys are ignored: PM10 50 → 3 (45 < 50 <= 120)
        ({"pm10_ugm3": 50.0, "noise_db": 999.0, "co_mgm3": 99.0}, 3),
        # all five good
        (
            {
                "pm2_5_ugm3": 5.0,
                "pm10_ugm3": 15.0,
                "no2_ugm3": 10.0,
                "o3_ugm3": 60.0,
                "so2_ugm3": 20.0,
            },
            1,
        ),
        ({}, None),
        ({"co_mgm3": 3.0, "temperature_c": 20.0}, None),
    ],
)
def test_eaqi_band_is_the_worst_pollutant(means, expected_band):
    assert eaqi_band(means) == expected_band


# ---------------------------------------------------------------------------------------------
# Ozone maximum daily 8-hour mean
# ---------------------------------------------------------------------------------------------

JULY_15 = local_day(at("2026-07-15T12:00:00+02:00"))


def hours_from(first_local_hour: str, values: list[float]) -> dict[int, float]:
    start = at(first_local_hour)
    return {start + i * HOUR_US: value for i, value in enumerate(values)}


def test_o3_first_period_starts_the_evening_before():
    hourly = {
        # 14 July 16:00 (1000) is only in windows ending on 14 July (the last one ends at 24:00)
        **hours_from("2026-07-14T16:00:00+02:00", [1000.0]),
        # 14 July 17:00 .. 15 July 00:00: eight hours at 150
        **hours_from("2026-07-14T17:00:00+02:00", [150.0] * 8),
        # 15 July 01:00 .. 23:00 at 50
        **hours_from("2026-07-15T01:00:00+02:00", [50.0] * 23),
    }
    # 15 July, first window [14 July 17:00, 15 July 01:00): 8 * 150 / 8 = 150; the next one
    # [18:00, 02:00) is (7 * 150 + 50) / 8 = 137.5, later ones lower. Had the window ending at
    # 15 July 00:00 been counted, (1000 + 7 * 150) / 8 = 256.25 would win.
    assert max_daily_8h_mean(hourly, JULY_15) == 150.0
    # 14 July: windows ending 21:00 or earlier have at most 5 values (invalid); ending 22:00,
    # [14:00, 22:00) holds 16..21 h: (1000 + 5 * 150) / 6 = 291.67; ending 23:00:
    # (1000 + 6 * 150) / 7 = 271.43; ending 24:00: (1000 + 7 * 150) / 8 = 256.25.
    july_14 = local_day(at("2026-07-14T12:00:00+02:00"))
    assert max_daily_8h_mean(hourly, july_14) == pytest.approx(1750.0 / 6)


def test_o3_last_period_ends_at_midnight():
    hourly = {
        **hours_from("2026-07-15T16:00:00+02:00", [80.0] * 7 + [160.0]),  # 16:00 .. 23:00
        **hours_from("2026-07-16T00:00:00+02:00", [500.0]),  # belongs to 16 July's windows
    }
    # [16:00, 24:00): (7 * 80 + 160) / 8 = 90, the day's last and largest window;
    # [15:00, 23:00) holds 7 values: 80. With 00:00 on 16 July it would be 142.5.
    assert max_daily_8h_mean(hourly, JULY_15) == 90.0


# Six values at 10:00 .. 15:00: the windows ending 16:00, 17:00 and 18:00 each hold all six,
# mean (10 + 20 + 30 + 40 + 50 + 60) / 6 = 35; every other window holds 5 or fewer.
SIX_HOURS = hours_from("2026-07-15T10:00:00+02:00", [10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
# Without 10:00 no window has more than 5 values; with min_hours 5: (20 + ... + 60) / 5 = 40.
FIVE_HOURS = hours_from("2026-07-15T11:00:00+02:00", [20.0, 30.0, 40.0, 50.0, 60.0])


@pytest.mark.parametrize(
    ("hourly", "min_hours", "expected"),
    [
        (SIX_HOURS, 6, 35.0),
        (FIVE_HOURS, 6, None),
        (FIVE_HOURS, 5, 40.0),
        (SIX_HOURS, 7, None),
        ({}, 6, None),
    ],
)
def test_o3_six_of_eight_validity(hourly, min_hours, expected):
    assert max_daily_8h_mean(hourly, JULY_15, min_hours) == expected


def test_o3_on_the_spring_forward_day_uses_real_hours():
    day = local_day(at("2026-03-29T12:00:00+02:00"))
    # The last window is the 8 real hours before 24:00 CEST (22:00Z): 14:00Z .. 21:00Z.
    hourly = {
        **hours_from("2026-03-29T14:00:00+00:00", [90.0] * 8),
        **hours_from("2026-03-29T22:00:00+00:00", [500.0]),  # 30 March 00:00 CEST
    }
    assert max_daily_8h_mean(hourly, day) == 90.0
    # The first window ends at 01:00 CET (00:00Z): 16:00Z .. 23:00Z of 28 March. A value at
    # 15:00Z of 28 March (16:00 CET) is outside every window of 29 March.
    early = {
        **hours_from("2026-03-28T15:00:00+00:00", [1000.0]),
        **hours_from("2026-03-28T16:00:00+00:00", [40.0] * 8),
    }
    assert max_daily_8h_mean(early, day) == 40.0


@pytest.mark.parametrize("min_hours", [0, 9])
def test_o3_rejects_impossible_min_hours(min_hours):
    with pytest.raises(ValueError, match="min_hours"):
        max_daily_8h_mean({}, JULY_15, min_hours)


# ---------------------------------------------------------------------------------------------
# Traffic counters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "elapsed_s", "expected"),
    [
        (100, 150, 60.0, CounterStep(50, "ok")),
        (100, 100, 60.0, CounterStep(0, "ok")),  # nothing passed: 0, not "no data"
        # limit = max(1000, 50 * 60) = 3000
        (0, 3000, 60.0, CounterStep(3000, "ok")),
        (0, 3001, 60.0, CounterStep(None, "reset")),
        (0, 1_000_000, 60.0, CounterStep(None, "reset")),  # implausible jump, not a flow
        # the floor: limit = max(1000, 50 * 0) = 1000
        (0, 1000, 0.0, CounterStep(1000, "ok")),
        (0, 1001, 0.0, CounterStep(None, "reset")),
        # u16 wrap: 5 + 65536 - 65530 = 11
        (65530, 5, 60.0, CounterStep(11, "wrap")),
        (65535, 0, 1.0, CounterStep(1, "wrap")),
        # u16 wrap at the floor: 0 + 65536 - 64536 = 1000 (ok), 64535 → 1001 (reset)
        (64536, 0, 0.0, CounterStep(1000, "wrap")),
        (64535, 0, 0.0, CounterStep(None, "reset")),
        # u16 decrease too large to be a wrap: 10 + 65536 - 5000 = 60546 > 3000 → restart
        (5000, 10, 60.0, CounterStep(None, "reset")),
        # u32 wrap: 20 + 2^32 - (2^32 - 10) = 30
        (U32_MODULUS - 10, 20, 60.0, CounterStep(30, "wrap")),
        (U32_MODULUS - 1, 0, 1.0, CounterStep(1, "wrap")),
        # previous >= 2^16 is a 32-bit register: 50 + 2^32 - 70000 is huge → restart
        (70000, 50, 60.0, CounterStep(None, "reset")),
        (U16_MODULUS, 0, 60.0, CounterStep(None, "reset")),
        # a register past 32 bits cannot wrap here
        (U32_MODULUS + 5, 3, 60.0, CounterStep(None, "reset")),
        (U32_MODULUS + 5, U32_MODULUS + 10, 60.0, CounterStep(5, "ok")),
    ],
)
def test_counter_delta(previous, current, elapsed_s, expected):
    assert counter_delta(previous, current, elapsed_s) == expected


def test_counter_delta_custom_plausibility():
    # limit = max(10, 2 * 30) = 60
    assert counter_delta(0, 60, 30.0, max_rate_per_s=2.0, min_plausible=10) == CounterStep(60, "ok")
    assert counter_delta(0, 61, 30.0, max_rate_per_s=2.0, min_plausible=10) == CounterStep(
        None, "reset"
    )


@pytest.mark.parametrize(
    ("previous", "current", "elapsed_s", "max_rate_per_s", "min_plausible"),
    [
        (-1, 0, 1.0, 50.0, 1000),
        (0, -1, 1.0, 50.0, 1000),
        (0, 1, -1.0, 50.0, 1000),
        (0, 1, 1.0, -50.0, 1000),
        (0, 1, 1.0, 50.0, -1),
    ],
)
def test_counter_delta_rejects_negative_input(
    previous, current, elapsed_s, max_rate_per_s, min_plausible
):
    with pytest.raises(ValueError, match="negative"):
        counter_delta(previous, current, elapsed_s, max_rate_per_s, min_plausible)


# ---------------------------------------------------------------------------------------------
# Occupancy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("occupancy", "expected_level"),
    [
        (0.0, 1),
        (24.99, 1),
        (25.0, 2),  # on a threshold: the higher level
        (49.99, 2),
        (50.0, 3),
        (74.99, 3),
        (75.0, 4),
        (89.99, 4),
        (90.0, 5),
        (100.0, 5),
        (130.0, 5),
        (-5.0, 1),
    ],
)
def test_affluence_level_default_thresholds(occupancy, expected_level):
    assert affluence_level(occupancy) == expected_level
    assert AFFLUENCE_LABELS[expected_level - 1]  # every default level has a label


def test_affluence_defaults():
    assert DEFAULT_AFFLUENCE_THRESHOLDS_PCT == (25.0, 50.0, 75.0, 90.0)
    assert len(AFFLUENCE_LABELS) == len(DEFAULT_AFFLUENCE_THRESHOLDS_PCT) + 1


@pytest.mark.parametrize(
    ("occupancy", "thresholds", "expected_level"),
    [
        (59.0, (60.0, 80.0), 1),
        (60.0, (60.0, 80.0), 2),
        (80.0, (60.0, 80.0), 3),
        (50.0, (), 1),
        (50.0, [10.0, 20.0, 30.0], 4),
    ],
)
def test_affluence_level_custom_thresholds(occupancy, thresholds, expected_level):
    assert affluence_level(occupancy, thresholds) == expected_level


@pytest.mark.parametrize("thresholds", [(50.0, 50.0), (60.0, 40.0), (10.0, 30.0, 20.0)])
def test_affluence_level_rejects_unordered_thresholds(thresholds):
    with pytest.raises(ValueError, match="strictly increasing"):
        affluence_level(50.0, thresholds)


@pytest.mark.parametrize(
    ("people", "capacity", "expected"),
    [
        (30.0, 120, 25.0),
        (0.0, 50, 0.0),
        (60.0, 50, 120.0),  # over capacity is not clamped
        (1.0, 3, 100 / 3),
        (10.0, None, None),
        (10.0, 0, None),
        (10.0, -5, None),
    ],
)
def test_occupancy_pct(people, capacity, expected):
    assert occupancy_pct(people, capacity) == expected
