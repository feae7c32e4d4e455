"""City indicators as pure functions: noise levels, air quality, traffic counters, occupancy.

Nothing here keeps state or does I/O, so the stream operators and the batch recomputations share
one definition of each indicator and the tests check it against hand-computed tables. Standard
library only (``math``, ``zoneinfo``), no numpy: the inputs are a few values per sensor and
window, where array conversions would cost more than they save.

Times are int microseconds since the Unix epoch (UTC) unless a name says otherwise. Local
calendar questions (which noise period, which day) take a ``ZoneInfo``, Paris by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Final, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "AFFLUENCE_LABELS",
    "DEFAULT_AFFLUENCE_THRESHOLDS_PCT",
    "EAQI_BANDS",
    "EAQI_LABELS",
    "LEVEL_BIN_DB",
    "PARIS",
    "PERCENT_REL_TOL",
    "U16_MODULUS",
    "U32_MODULUS",
    "CounterEvent",
    "CounterStep",
    "LocalDay",
    "NoisePeriod",
    "affluence_level",
    "bin_level_db",
    "counter_delta",
    "day_start_us",
    "eaqi_band",
    "eaqi_pollutant_band",
    "energetic_mean_db",
    "exceeded_level_db",
    "lden_db",
    "level_bin",
    "level_from_energy",
    "local_day",
    "max_daily_8h_mean",
    "noise_period",
    "occupancy_pct",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_HOUR_US: Final = 3_600_000_000

# --------------------------------------------------------------------------------------------
# Noise levels
# --------------------------------------------------------------------------------------------

LEVEL_BIN_DB: Final = 0.1
"""Width of a level-histogram bin: the 0.1 dB display resolution of sound level meters."""


def level_bin(level_db: float) -> int:
    """The 0.1 dB bin of a level, rounded half up: ``floor(level_db * 10 + 0.5)``.

    Why: statistical levels (L10, L50, L90) come from a histogram of durations per level class
    (ISO 1996-1:2016, N percent exceedance level); integer bins make the histogram a
    small exact mapping that merges by adding durations. Bin 654 holds 65.35 <= L < 65.45 dB.
    """
    return math.floor(level_db * 10 + 0.5)


def bin_level_db(bin_index: int) -> float:
    """The level of a 0.1 dB bin, ``bin_index / 10`` (bin 654 is 65.4 dB)."""
    return bin_index / 10


def energetic_mean_db(levels_db: Sequence[float], durations_s: Sequence[float]) -> float | None:
    """The equivalent continuous level of consecutive levels held for the given durations.

    Why: decibels are logarithms of energy, so levels are averaged as energies, each weighted by
    how long it lasted, never arithmetically (ISO 1996-1:2016, equivalent continuous sound pressure
    level; Directive 2002/49/EC Annex I uses it for Lday, Levening and Lnight):

        L = 10·log10( Σ tᵢ·10^(Lᵢ/10) / Σ tᵢ )

    Computed relative to the loudest level, so very loud levels do not overflow. None when
    there is nothing to average (no levels, or every duration 0). ValueError for sequences of
    different lengths or a negative duration.
    """
    if len(levels_db) != len(durations_s):
        raise ValueError(f"{len(levels_db)} levels for {len(durations_s)} durations")
    if any(duration < 0 for duration in durations_s):
        raise ValueError("a duration is negative")
    total_s = math.fsum(durations_s)
    if total_s <= 0:
        return None
    loudest_db = max(
        level for level, duration in zip(levels_db, durations_s, strict=True) if duration > 0
    )
    relative_energy = math.fsum(
        duration * 10 ** ((level - loudest_db) / 10)
        for level, duration in zip(levels_db, durations_s, strict=True)
    )
    return loudest_db + 10 * math.log10(relative_energy / total_s)


def level_from_energy(energy_sum: float, duration_s: float) -> float | None:
    """The equivalent level of an accumulated energy: ``10·log10(energy_sum / duration_s)``.

    Why: a window that accumulates ``Σ tᵢ·10^(Lᵢ/10)`` and ``Σ tᵢ`` merges with other windows by
    addition, and turns into the same equivalent level as ``energetic_mean_db`` (ISO 1996-1:2016)
    only at the end. None when duration_s <= 0 or energy_sum <= 0 (no level exists).
    """
    if duration_s <= 0 or energy_sum <= 0:
        return None
    return 10 * math.log10(energy_sum / duration_s)


PERCENT_REL_TOL: Final = 1e-9


def exceeded_level_db(histogram: Mapping[int, float], percent: float) -> float | None:
    """L_N, the level exceeded N % of the time, from durations per 0.1 dB bin.

    Why: percentile levels describe how a level is distributed in time: L90 is the background,
    L10 the recurring peaks (ISO 1996-1:2016, N percent exceedance level L_N,T).

    Definition implemented: walk the bins from the highest level down, adding their durations;
    L_N is the level of the first bin at which the accumulated duration reaches at least
    ``percent / 100 * total`` (equality within a relative tolerance of 1e-9, to absorb float
    noise in the sums). So L10 >= L50 >= L90, a single bin gives every L_N its own level, and
    when the accumulation lands exactly on the boundary the higher bin is the answer (two equal
    halves at 60 and 70 dB: L50 = 70 dB). Bins with a zero duration are not part of the
    distribution. Being a histogram, the answer is quantised to 0.1 dB and not interpolated.

    None when the total duration is 0. ValueError for a negative duration or a percent
    outside [0, 100].
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent {percent} is outside [0, 100]")
    if any(duration < 0 for duration in histogram.values()):
        raise ValueError("a histogram duration is negative")
    occupied = sorted((b for b, duration in histogram.items() if duration > 0), reverse=True)
    total_s = math.fsum(histogram[b] for b in occupied)
    if total_s <= 0:
        return None
    target_s = percent / 100 * total_s
    accumulated_s = 0.0
    for bin_index in occupied:
        accumulated_s += histogram[bin_index]
        if accumulated_s >= target_s or math.isclose(
            accumulated_s, target_s, rel_tol=PERCENT_REL_TOL
        ):
            return bin_level_db(bin_index)
    return bin_level_db(occupied[-1])  # only reached through rounding beyond the tolerance


def lden_db(
    ld_db: float,
    le_db: float,
    ln_db: float,
    day_hours: float = 12.0,
    evening_hours: float = 4.0,
    night_hours: float = 8.0,
) -> float:
    """The day-evening-night level Lden from the day, evening and night levels.

    Why: the EU's common annoyance indicator; evening noise gets a 5 dB and night noise a
    10 dB penalty (Directive 2002/49/EC, Annex I, 1: "Definition of the day-evening-night level
    Lden"):

        Lden = 10·log10( (Td·10^(Ld/10) + Te·10^((Le+5)/10) + Tn·10^((Ln+10)/10)) / (Td+Te+Tn) )

    With the defaults this is the directive's 12, 4 and 8 hours over 24. The directive counts
    hours, not clock readings: on a daylight-saving day the caller passes the real lengths of the
    periods (``local_day`` gives them: 23 and 25 hour days lose or gain a night hour).
    ValueError for a negative length or lengths summing to 0.
    """
    hours = (day_hours, evening_hours, night_hours)
    if any(h < 0 for h in hours) or sum(hours) <= 0:
        raise ValueError(f"period lengths {hours} must be >= 0 and not all 0")
    level = energetic_mean_db((ld_db, le_db + 5, ln_db + 10), hours)
    assert level is not None  # the lengths sum to more than 0
    return level


NoisePeriod = Literal["day", "evening", "night"]

PARIS: Final = ZoneInfo("Europe/Paris")

# Directive 2002/49/EC Annex I default periods, local time: day 07-19, evening 19-23, night 23-07.
_DAY_START_HOUR: Final = 7
_EVENING_START_HOUR: Final = 19
_NIGHT_START_HOUR: Final = 23


def _datetime_of_us(instant_us: int, tz: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(microseconds=instant_us)).astimezone(tz)


def _us_of_datetime(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_US


def _local_wall_us(day: date, hour: int, tz: ZoneInfo) -> int:
    """The instant of a local wall-clock hour of ``day`` (``hour`` 24 is the next midnight).

    An ambiguous wall time (fall back) is taken at its first occurrence (fold 0); a skipped one
    (spring forward) at the offset before the jump, as ``zoneinfo`` does.
    """
    if hour == 24:
        day, hour = day + timedelta(days=1), 0
    return _us_of_datetime(datetime.combine(day, time(hour), tzinfo=tz))


def noise_period(hour_start_us: int, tz: ZoneInfo = PARIS) -> NoisePeriod:
    """The Lden period of the local hour starting at ``hour_start_us``.

    Why: Lday, Levening and Lnight average the hours of their own period, by local time
    (Directive 2002/49/EC, Annex I, 1, default periods: day 07.00-19.00, evening 19.00-23.00,
    night 23.00-07.00 local time). Both 02:00 hours of a fall-back night are night hours.
    """
    local_hour = _datetime_of_us(hour_start_us, tz).hour
    if _DAY_START_HOUR <= local_hour < _EVENING_START_HOUR:
        return "day"
    if _EVENING_START_HOUR <= local_hour < _NIGHT_START_HOUR:
        return "evening"
    return "night"


@dataclass(frozen=True, slots=True)
class LocalDay:
    """A local calendar day: [local midnight, next local midnight) in UTC µs, and the real hours
    of that day in each Lden period (night = 00:00-07:00 plus 23:00-24:00 of the same day)."""

    start_us: int
    end_us: int
    day_hours: float
    evening_hours: float
    night_hours: float


def day_start_us(instant_us: int, tz: ZoneInfo = PARIS) -> int:
    """The instant of local midnight starting the local day that contains ``instant_us``.

    Why: daily indicators (Lden, the ozone 8-hour maximum) are per local calendar day, and the
    stream keys its daily state by this instant. Same as ``local_day(...).start_us``, cheaper.
    """
    return _local_wall_us(_datetime_of_us(instant_us, tz).date(), 0, tz)


def local_day(instant_us: int, tz: ZoneInfo = PARIS) -> LocalDay:
    """The local calendar day containing ``instant_us`` and its real period lengths in hours.

    Why: Lden weights each period by its length (Directive 2002/49/EC, Annex I, 1), and a
    daylight-saving change makes the night shorter or longer: in Paris 2026-03-29 has 23 hours
    (night 7) and 2026-10-25 has 25 (night 9); other days have 12, 4 and 8. Lengths are the
    differences of the UTC instants of local 00:00, 07:00, 19:00, 23:00 and 24:00.
    """
    today = _datetime_of_us(instant_us, tz).date()
    midnight, day_start, evening_start, night_start, next_midnight = (
        _local_wall_us(today, hour, tz)
        for hour in (0, _DAY_START_HOUR, _EVENING_START_HOUR, _NIGHT_START_HOUR, 24)
    )
    return LocalDay(
        start_us=midnight,
        end_us=next_midnight,
        day_hours=(evening_start - day_start) / _HOUR_US,
        evening_hours=(night_start - evening_start) / _HOUR_US,
        night_hours=((day_start - midnight) + (next_midnight - night_start)) / _HOUR_US,
    )


# --------------------------------------------------------------------------------------------
# Air quality
# --------------------------------------------------------------------------------------------

EAQI_BANDS: Final[Mapping[str, tuple[float, float, float, float, float]]] = {
    "pm2_5_ugm3": (5.0, 15.0, 50.0, 90.0, 140.0),
    "pm10_ugm3": (15.0, 45.0, 120.0, 195.0, 270.0),
    "no2_ugm3": (10.0, 25.0, 60.0, 100.0, 150.0),
    "o3_ugm3": (60.0, 100.0, 120.0, 160.0, 180.0),
    "so2_ugm3": (20.0, 40.0, 125.0, 190.0, 275.0),
}
"""Upper bounds in µg/m³ of EAQI bands 1-5 per pollutant; band 6 lies above the last bound.

The European Environment Agency's European Air Quality Index as revised in 2024 to follow the
WHO 2021 global air quality guidelines: ETC HE Report 2024/17, "EEA's revision of the European
Air Quality Index bands" (European Topic Centre on Human Health and the Environment, 2024),
used by airindex.eea.europa.eu. The revised index is computed from hourly concentrations of all
five pollutants (PM no longer uses a 24-hour running mean). The EEA page itself was not
reachable from here: the numbers were checked against the open-meteo project's update to these
bands citing that report and the airindex.eea.europa.eu legend (open-meteo/open-meteo PR #2045
and open-meteo/open-meteo-website PR #1166, 2026-08-13) and against independent
implementations citing the same report. The pre-2024 table (PM2.5 10/20/25/50/75 ...) is
obsolete.

Bounds are inclusive: a concentration exactly on a bound is in the lower (better) band, e.g.
PM2.5 at 5.0 µg/m³ is band 1 "good", just above is band 2. The EEA table writes adjoining
ranges ("0-5", "5-15") and does not say; this is the convention taken here.
"""

EAQI_LABELS: Final = ("good", "fair", "moderate", "poor", "very poor", "extremely poor")


def eaqi_pollutant_band(quantity: str, concentration_ugm3: float) -> int:
    """The EAQI band (1 good .. 6 extremely poor) of one pollutant's concentration.

    Why: each pollutant is rated on its own health-based scale (``EAQI_BANDS``, EEA revision of
    2024, ETC HE Report 2024/17); the first band whose upper bound is >= the concentration.
    Negative concentrations (sensor offsets near zero) count as 0. KeyError for an unknown
    quantity; ValueError for NaN.
    """
    bounds = EAQI_BANDS[quantity]
    if math.isnan(concentration_ugm3):
        raise ValueError(f"{quantity} concentration is NaN")
    concentration = max(concentration_ugm3, 0.0)
    for band, upper_bound in enumerate(bounds, start=1):
        if concentration <= upper_bound:
            return band
    return len(bounds) + 1


def eaqi_band(means_ugm3: Mapping[str, float]) -> int | None:
    """The station's EAQI band: the worst (highest) band over the pollutants present.

    Why: the EEA index "corresponds to the poorest level for any of five pollutants" (EEA,
    European Air Quality Index, airindex.eea.europa.eu, 2024 revision). Keys other than the five
    ``EAQI_BANDS`` quantities are ignored; None when none of the five is present. The EEA also
    requires a minimum set of pollutants per station type before publishing; that policy is the
    caller's.
    """
    bands = [
        eaqi_pollutant_band(quantity, concentration)
        for quantity, concentration in means_ugm3.items()
        if quantity in EAQI_BANDS
    ]
    return max(bands) if bands else None


_RUNNING_MEAN_HOURS: Final = 8


def max_daily_8h_mean(
    hourly_means: Mapping[int, float], day: LocalDay, min_hours: int = 6
) -> float | None:
    """Ozone's maximum daily 8-hour mean for a local day, from hourly means keyed by hour start.

    Why: the ozone target value and long-term objective for health are stated on it (Directive
    2008/50/EC, Annex VII, B, note 1, and the same definition in the recast Directive (EU)
    2024/2881): "The maximum daily eight-hour mean concentration shall be selected by examining
    eight-hour running averages, calculated from hourly data and updated each hour. Each
    eight-hour average so calculated shall be assigned to the day on which it ends", so the
    first period of a day runs from 17:00 the day before to 01:00, the last from 16:00 to 24:00.

    Implemented with real hours, so daylight-saving days work: the periods are the windows
    [end - 8 h, end) for every hour end in (day.start_us, day.end_us], stepped by one hour
    (24 windows, 23 or 25 on DST days). Each window's mean is the mean of the hourly means
    present in it; it is valid when at least ``min_hours`` of its 8 hours are present (75 %,
    Directive 2008/50/EC Annex VII, A, 2: "8 hours values: 75 % of values (i.e. 6 hours)").
    Keys are expected on the hour grid of ``day.start_us`` (whole-hour UTC offsets, as Paris).

    Returns the largest valid running mean; None when no window is valid. Not applied here:
    the directive's further rule that the daily maximum needs 75 % of its running means
    (18 of 24) valid. ValueError when min_hours is not in 1..8.
    """
    if not 1 <= min_hours <= _RUNNING_MEAN_HOURS:
        raise ValueError(f"min_hours {min_hours} is not in 1..{_RUNNING_MEAN_HOURS}")
    best: float | None = None
    for end_us in range(day.start_us + _HOUR_US, day.end_us + 1, _HOUR_US):
        values = [
            hourly_means[hour_us]
            for hour_us in range(end_us - _RUNNING_MEAN_HOURS * _HOUR_US, end_us, _HOUR_US)
            if hour_us in hourly_means
        ]
        if len(values) >= min_hours:
            mean = math.fsum(values) / len(values)
            if best is None or mean > best:
                best = mean
    return best


# --------------------------------------------------------------------------------------------
# Traffic counters
# --------------------------------------------------------------------------------------------

U16_MODULUS: Final = 1 << 16
U32_MODULUS: Final = 1 << 32

CounterEvent = Literal["ok", "wrap", "reset"]


@dataclass(frozen=True, slots=True)
class CounterStep:
    """Crossings between two readings of a cumulative counter (None: unknown) and what happened
    to the counter ("ok", "wrap" past its modulus, or "reset" by a restart)."""

    delta: int | None
    event: CounterEvent


def counter_delta(
    previous: int,
    current: int,
    elapsed_s: float,
    max_rate_per_s: float = 50.0,
    min_plausible: int = 1000,
) -> CounterStep:
    """The crossings counted between two readings of a device's cumulative counter.

    Why: loop and radar counters report a running total in a 16- or 32-bit register that wraps
    to 0 and restarts at 0 after a power cut; flows are differences of totals, and a wrong guess
    either loses a modulus worth of vehicles or invents a giant flow. Rules (the usual handling
    of wrapping counters, as for SNMP Counter32 in RFC 2578 §7.1.6):

    - current >= previous and the increase is plausible → "ok", delta = current - previous
      (0 is a real "nothing passed", unlike no data);
    - current < previous: the register is 16-bit if previous < 2**16, else 32-bit; a plausible
      wrapped difference (current + modulus - previous) → "wrap" with it; otherwise → "reset",
      delta None: the device restarted and the crossings since the previous reading are unknown
      (never negative);
    - an implausibly large increase is also a "reset" with delta None, never a giant flow.

    Plausible means <= max(min_plausible, max_rate_per_s * elapsed_s): 50 vehicles a second is
    beyond any road section, and the floor keeps short or clock-skewed intervals usable.
    A previous reading >= 2**32 cannot wrap: a decrease from it is a reset.
    ValueError for a negative argument.
    """
    if previous < 0 or current < 0 or elapsed_s < 0 or max_rate_per_s < 0 or min_plausible < 0:
        raise ValueError(
            f"negative counter input: previous={previous} current={current} "
            f"elapsed_s={elapsed_s} max_rate_per_s={max_rate_per_s} min_plausible={min_plausible}"
        )
    limit = max(float(min_plausible), max_rate_per_s * elapsed_s)
    if current >= previous:
        increase = current - previous
        return CounterStep(increase, "ok") if increase <= limit else CounterStep(None, "reset")
    modulus = U16_MODULUS if previous < U16_MODULUS else U32_MODULUS
    if previous < modulus:
        wrapped = current + modulus - previous
        if wrapped <= limit:
            return CounterStep(wrapped, "wrap")
    return CounterStep(None, "reset")


# --------------------------------------------------------------------------------------------
# Occupancy
# --------------------------------------------------------------------------------------------

DEFAULT_AFFLUENCE_THRESHOLDS_PCT: Final = (25.0, 50.0, 75.0, 90.0)
AFFLUENCE_LABELS: Final = ("low", "moderate", "busy", "very busy", "full")


def affluence_level(
    occupancy_pct: float, thresholds_pct: Sequence[float] = DEFAULT_AFFLUENCE_THRESHOLDS_PCT
) -> int:
    """The affluence level (1 low .. len(thresholds) + 1) of an occupancy in percent.

    Why: visitors read "busy" more easily than 63 %; the level is 1 + the number of thresholds
    the occupancy reaches (``occupancy_pct >= threshold``), so a value on a threshold is in the
    higher level. The default 25/50/75/90 % cut-offs are this project's choice for pools (no
    standard applies); AFFLUENCE_LABELS names the default levels. ValueError if the thresholds
    are not strictly increasing.
    """
    if any(low >= high for low, high in pairwise(thresholds_pct)):
        raise ValueError(f"thresholds {tuple(thresholds_pct)} are not strictly increasing")
    return 1 + sum(1 for threshold in thresholds_pct if occupancy_pct >= threshold)


def occupancy_pct(people: float, capacity: int | None) -> float | None:
    """Occupancy in percent of capacity, ``100 · people / capacity``.

    Why: sites differ in size, so affluence compares occupancy relative to the site's capacity.
    None when the capacity is unknown (None) or not positive. Not clamped: more people than the
    capacity gives more than 100 %.
    """
    if capacity is None or capacity <= 0:
        return None
    return 100 * people / capacity
