"""Vehicles carrying PM2.5 sensors along city streets: where each one is, and what it breathes.

Why: a mobile sensor's records differ from a fixed one's by their position, which moves with
traffic (0-50 km/h, stops at lights and for deliveries), wanders with GNSS noise, and vanishes in
tunnels; and by what they measure, higher on the busy axes and at rush hours. Routes are
polylines shipped with a scenario (``[[routes]]`` tables of the scenario's TOML file, beside its
sites and sensors: ``name``, ``road``, ``points`` as ``[lat, lon]`` pairs, ``tunnels`` as
``[from, to]`` point-index pairs whose segments are underground). A vehicle drives its route to
the end and back. All randomness comes from the ``random.Random`` passed in.

Distances are computed on a local equirectangular plane (x = Δlon·cos(lat)·R, y = Δlat·R, R the
mean Earth radius 6,371,008.8 m): over a few kilometres its error is far below a GNSS fix's.
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

__all__ = ["ROAD_FACTORS", "Fix", "Route", "Vehicle", "load_routes"]

_EARTH_RADIUS_M: Final = 6_371_008.8
#: Speed limit in Paris, including the Boulevard Périphérique since October 2024: 50 km/h.
MAX_SPEED_MS: Final = 50 / 3.6
Road = Literal["peripherique", "boulevard", "street", "quay"]
#: PM2.5 at the kerb of each kind of road relative to the urban background, and inside a tunnel:
#: shapes, not data (traffic density and canyon effect; confined exhaust underground).
ROAD_FACTORS: Final[dict[str, float]] = {
    "peripherique": 1.7,
    "boulevard": 1.3,
    "quay": 1.2,
    "street": 1.0,
}
TUNNEL_FACTOR: Final = 2.4
#: Typical cruising speed per road, m/s (before traffic slows it down).
_CRUISE_MS: Final[dict[str, float]] = {
    "peripherique": 12.5,
    "boulevard": 9.0,
    "quay": 10.0,
    "street": 7.0,
}
#: Standard deviation of a consumer GNSS fix's horizontal error in a street canyon, metres.
GNSS_SIGMA_M: Final = 5.0


@dataclass(frozen=True, slots=True)
class Route:
    """A polyline of ``(lat, lon)`` points along one axis; segment i joins points i and i+1."""

    name: str
    road: Road
    points: tuple[tuple[float, float], ...]
    #: Segment indexes that are underground (no GNSS fix).
    tunnel_segments: frozenset[int] = frozenset()
    lengths: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError(f"route {self.name}: needs at least two points")
        lengths = tuple(_metres(a, b) for a, b in zip(self.points, self.points[1:], strict=False))
        object.__setattr__(self, "lengths", lengths)

    @property
    def length(self) -> float:
        return sum(self.lengths)

    def locate(self, distance: float) -> tuple[float, float, bool]:
        """``(lat, lon, underground)`` at ``distance`` metres from the first point (clamped)."""
        remaining = min(max(distance, 0.0), self.length)
        for index, length in enumerate(self.lengths):
            if remaining <= length or index == len(self.lengths) - 1:
                t = 0.0 if length == 0 else min(remaining / length, 1.0)
                (lat1, lon1), (lat2, lon2) = self.points[index], self.points[index + 1]
                return (
                    lat1 + (lat2 - lat1) * t,
                    lon1 + (lon2 - lon1) * t,
                    index in self.tunnel_segments,
                )
            remaining -= length
        raise AssertionError("unreachable")  # pragma: no cover


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    mean_lat = math.radians((a[0] + b[0]) / 2)
    dx = math.radians(b[1] - a[1]) * math.cos(mean_lat) * _EARTH_RADIUS_M
    dy = math.radians(b[0] - a[0]) * _EARTH_RADIUS_M
    return math.hypot(dx, dy)


@dataclass(frozen=True, slots=True)
class Fix:
    """What a vehicle's sensor reports at one moment: a position (None underground) and the
    road factor of where it is."""

    lat: float | None
    lon: float | None
    factor: float


@dataclass(slots=True)
class Vehicle:
    """One car on its route: distance along it, direction, speed, and a stop in progress."""

    route: Route
    distance: float
    forward: bool = True
    speed_ms: float = 0.0
    stopped_s: float = 0.0
    #: Event time of the last move, seconds since the epoch (None before the first).
    last_s: float | None = None

    def advance(self, now_s: float, rng: random.Random) -> Fix:
        """Drive from the last move to ``now_s`` and report where the vehicle is."""
        elapsed = 0.0 if self.last_s is None else max(0.0, now_s - self.last_s)
        self.last_s = now_s
        if self.stopped_s > 0:
            pause = min(self.stopped_s, elapsed)
            self.stopped_s -= pause
            elapsed -= pause
        self._move(self.speed_ms * elapsed)
        # The next stretch: a stop (a red light, a delivery) or a new speed around the cruise.
        if rng.random() < 0.15:
            self.stopped_s = rng.uniform(15.0, 90.0)
            self.speed_ms = 0.0
        else:
            cruise = _CRUISE_MS[self.route.road]
            self.speed_ms = min(MAX_SPEED_MS, max(0.0, rng.gauss(cruise, 3.0)))
        lat, lon, underground = self.route.locate(self.distance)
        if underground:
            return Fix(None, None, TUNNEL_FACTOR)
        # GNSS noise: a Gaussian error of GNSS_SIGMA_M metres on each axis.
        lat += math.degrees(rng.gauss(0.0, GNSS_SIGMA_M) / _EARTH_RADIUS_M)
        lon += math.degrees(
            rng.gauss(0.0, GNSS_SIGMA_M) / (_EARTH_RADIUS_M * math.cos(math.radians(lat)))
        )
        return Fix(lat, lon, ROAD_FACTORS[self.route.road])

    def _move(self, metres: float) -> None:
        """Along the route, turning back at either end."""
        length = self.route.length
        while metres > 0:
            room = length - self.distance if self.forward else self.distance
            if metres < room:
                self.distance += metres if self.forward else -metres
                return
            metres -= room
            self.distance = length if self.forward else 0.0
            self.forward = not self.forward


def load_routes(path: Path) -> tuple[Route, ...]:
    """The ``[[routes]]`` of a scenario file (none: an empty tuple); ``ValueError`` naming the
    route for a malformed one."""
    data = tomllib.loads(path.read_text())
    routes = []
    for index, raw in enumerate(data.get("routes", [])):
        name = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            road = raw["road"]
            if road not in ROAD_FACTORS:
                raise ValueError(f"road must be one of {sorted(ROAD_FACTORS)}")
            points = tuple((float(lat), float(lon)) for lat, lon in raw["points"])
            tunnels: set[int] = set()
            for start, end in raw.get("tunnels", []):
                if not 0 <= start < end < len(points):
                    raise ValueError(f"tunnel [{start}, {end}] is not within the points")
                tunnels.update(range(start, end))
            routes.append(Route(name, road, points, frozenset(tunnels)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: route {name}: {exc}") from None
    return tuple(routes)
