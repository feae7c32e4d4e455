"""The pollutrack fleet: routes, vehicle motion, fixes and the messages it sends."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from citysense.registry import load_registry, scenario_path
from decoders import get_codec
from decoders.envelopes import parse_uplink
from simulators import Fleet
from simulators._vehicles import MAX_SPEED_MS, Route, Vehicle, load_routes

PATH = scenario_path("pollutrack")
#: 0.001° of latitude is 111.2 m; of longitude at 48.86° N, 111.3 x cos(48.86°) = 73.2 m.
M_PER_DEG_LAT = 111_195.0


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dy = (b[0] - a[0]) * M_PER_DEG_LAT
    dx = (b[1] - a[1]) * M_PER_DEG_LAT * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dx, dy)


def _distance_to_route(point: tuple[float, float], route: Route) -> float:
    """Metres from ``point`` to the nearest segment of ``route`` (on a local plane, metres)."""
    scale_x = M_PER_DEG_LAT * math.cos(math.radians(point[0]))
    px, py = point[1] * scale_x, point[0] * M_PER_DEG_LAT
    best = math.inf
    for (lat1, lon1), (lat2, lon2) in zip(route.points, route.points[1:], strict=False):
        ax, ay = lon1 * scale_x, lat1 * M_PER_DEG_LAT
        bx, by = lon2 * scale_x, lat2 * M_PER_DEG_LAT
        length2 = (bx - ax) ** 2 + (by - ay) ** 2
        t = 0.0 if length2 == 0 else ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / length2
        t = min(1.0, max(0.0, t))
        best = min(best, math.hypot(px - (ax + t * (bx - ax)), py - (ay + t * (by - ay))))
    return best


def test_the_scenario_has_thirty_mobile_cars_and_real_axes() -> None:
    registry = load_registry(PATH)
    cars = list(registry.sensors.values())
    assert len(cars) == 30
    assert all(s.mobile and s.kind == "air" and s.interval_s == 10.0 for s in cars)
    routes = load_routes(PATH)
    names = " ".join(r.name for r in routes)
    for axis in ("Rivoli", "Périphérique", "Saint-Germain", "Pompidou"):
        assert axis in names
    assert {r.road for r in routes} >= {"street", "boulevard", "peripherique"}
    assert any(r.tunnel_segments for r in routes)
    # Every point is in Paris: within 8 km of Notre-Dame (48.853 N, 2.3499 E).
    for route in routes:
        for point in route.points:
            assert _metres(point, (48.853, 2.3499)) < 8000, (route.name, point)


def test_a_route_file_error_names_the_route(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text('[[routes]]\nname = "Nowhere"\nroad = "motorway"\npoints = [[48.8, 2.3]]\n')
    with pytest.raises(ValueError, match=r"Nowhere.*road"):
        load_routes(path)
    path.write_text(
        '[[routes]]\nname = "Short"\nroad = "street"\npoints = [[48.8, 2.3], [48.81, 2.3]]\n'
        "tunnels = [[1, 3]]\n"
    )
    with pytest.raises(ValueError, match=r"Short.*tunnel"):
        load_routes(path)


def test_a_vehicle_drives_at_city_speeds_turns_back_and_loses_its_fix_underground() -> None:
    # A straight 1,112 m street north, whose second half is a tunnel.
    route = Route("test", "street", ((48.85, 2.35), (48.855, 2.35), (48.86, 2.35)), frozenset({1}))
    assert route.length == pytest.approx(1112, rel=0.01)
    rng = random.Random(4)
    vehicle = Vehicle(route, distance=0.0)
    previous = vehicle.distance
    underground = fixes = 0
    turned = False
    for step in range(2000):
        forward = vehicle.forward
        fix = vehicle.advance(step * 10.0, rng)
        moved = abs(vehicle.distance - previous)
        if vehicle.forward == forward:
            assert moved <= MAX_SPEED_MS * 10 + 1e-6  # 50 km/h at most over 10 s
        else:
            turned = True
        previous = vehicle.distance
        assert 0.0 <= vehicle.distance <= route.length
        if fix.lat is None:
            underground += 1
            assert vehicle.distance > route.lengths[0]
        else:
            fixes += 1
            # GNSS noise of 5 m (one standard deviation): a fix is never far from the street.
            assert fix.lon is not None
            assert abs(fix.lon - 2.35) * 73_200 < 30
    assert turned
    assert underground > 0
    assert fixes > 0


def test_pollutrack_messages_carry_pm25_and_fixes_near_their_routes() -> None:
    registry = load_registry(PATH)
    routes = load_routes(PATH)
    moment = [datetime(2026, 6, 2, 6, 0, tzinfo=UTC)]  # 08:00 in Paris: the morning peak
    fleet = Fleet(registry, seed=2, clock=lambda: moment[0], routes=routes)
    codec = get_codec("cayenne-lpp")
    positioned = unpositioned = 0
    for _ in range(60):  # ten minutes
        for message in fleet.next_batch(30):
            uplink = parse_uplink(message.topic, message.payload)
            assert uplink.device_name is not None
            sensor = registry.get(uplink.device_name)
            assert sensor is not None
            decoded = codec.decode(uplink.payload, uplink.fport, sensor.profile())
            assert 0 < decoded.values["pm2_5_ugm3"] <= 300
            if decoded.position is None:
                unpositioned += 1
                continue
            positioned += 1
            where = (decoded.position.lat, decoded.position.lon)
            # Within 40 m of some route (GNSS noise of 5 m, LPP's 0.0001° resolution).
            assert min(_distance_to_route(where, r) for r in routes) < 40, where
        moment[0] += timedelta(seconds=10)
    assert positioned > 0.9 * (positioned + unpositioned)
    assert unpositioned > 0  # the Tuileries tunnel


def test_a_mobile_fleet_without_routes_is_refused() -> None:
    with pytest.raises(ValueError, match="routes"):
        Fleet(load_registry(PATH))
