"""Daily patterns of a city square, as pure functions of local time and a day's weather.

Shapes, not data: traffic follows the two commuter peaks of weekday urban counts (about 08:00 and
18:00, weekends one broad afternoon hump); road noise follows traffic on a log scale (the
LAeq of a flow grows by 10·log10 of the flow ratio, as in the CNOSSOS-EU road model's emission
term); NO2 follows traffic on top of a background; pools fill during opening hours with lunch and
after-work peaks. Rain days cut walking and cycling by about a third and add a few dB of tyre
noise. All randomness comes from the ``random.Random`` passed in, so a seed gives the same city.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime

__all__ = [
    "DayWeather",
    "air_quality",
    "day_weather",
    "noise_level_db",
    "pool_occupancy",
    "traffic_intensity",
]


@dataclass(frozen=True, slots=True)
class DayWeather:
    rain: bool
    temperature_c: float


def day_weather(day: date, seed: int) -> DayWeather:
    """Rain on about one day in four, temperature with the season, both fixed by (day, seed)."""
    rng = random.Random(f"{seed}:{day.isoformat()}")
    seasonal = 12.5 - 8.0 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 20) / 365.25)
    return DayWeather(rain=rng.random() < 0.27, temperature_c=seasonal + rng.gauss(0, 2.5))


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


def traffic_intensity(local: datetime, weather: DayWeather, traffic_class: str) -> float:
    """Relative flow 0..1 for a class at local time: commuter peaks on weekdays."""
    hour = local.hour + local.minute / 60
    if local.weekday() < 5:
        shape = 0.05 + 0.9 * _bump(hour, 8.2, 1.3) + 0.8 * _bump(hour, 18.0, 1.8)
        shape += 0.45 * _bump(hour, 13.0, 3.5)
    else:
        shape = 0.05 + 0.6 * _bump(hour, 15.0, 4.0)
    if weather.rain and traffic_class in ("bicycle", "pedestrian", "two_wheeler"):
        shape *= 0.65
    return min(shape, 1.0)


def noise_level_db(flow: float, weather: DayWeather, rng: random.Random) -> float:
    """Road-side LAeq: 48 dB(A) background, +10·log10 of the flow, +2 dB on wet roads."""
    level = 48.0 + 10.0 * math.log10(1.0 + 40.0 * flow)
    if weather.rain:
        level += 2.0
    return level + rng.gauss(0, 1.5)


def air_quality(flow: float, weather: DayWeather, rng: random.Random) -> dict[str, float]:
    """Urban background plus a traffic term; rain washes particles out."""
    washout = 0.6 if weather.rain else 1.0
    pm10 = max(2.0, (14.0 + 18.0 * flow) * washout + rng.gauss(0, 2.0))
    pm2_5 = max(1.0, pm10 * 0.62 + rng.gauss(0, 1.0))
    return {
        "no2_ugm3": max(1.0, 18.0 + 55.0 * flow + rng.gauss(0, 4.0)),
        "o3_ugm3": max(1.0, 55.0 - 30.0 * flow + rng.gauss(0, 5.0)),
        "pm1_ugm3": max(0.5, pm2_5 * 0.7),
        "pm2_5_ugm3": pm2_5,
        "pm4_ugm3": max(pm2_5, pm10 * 0.85),
        "pm10_ugm3": pm10,
        "co2_ppm": max(400.0, 420.0 + 80.0 * flow + rng.gauss(0, 10.0)),
        "co_mgm3": max(0.05, 0.2 + 0.6 * flow + rng.gauss(0, 0.05)),
        "temperature_c": weather.temperature_c + rng.gauss(0, 0.3),
        "humidity_pct": min(100.0, max(10.0, (85.0 if weather.rain else 60.0) + rng.gauss(0, 5))),
        "pressure_hpa": 1013.0 + rng.gauss(0, 4.0),
    }


def pool_occupancy(local: datetime, opening_hours: tuple[str, ...]) -> float:
    """Fraction 0..1 of capacity: zero outside opening hours, peaks at noon and after work."""
    minutes = local.hour * 60 + local.minute
    for span in opening_hours:
        start_text, end_text = span.split("-")
        start = int(start_text[:2]) * 60 + int(start_text[3:])
        end = int(end_text[:2]) * 60 + int(end_text[3:])
        if start <= minutes < end:
            hour = minutes / 60
            return min(1.0, 0.15 + 0.55 * _bump(hour, 12.5, 1.2) + 0.7 * _bump(hour, 18.5, 1.5))
    return 0.0
