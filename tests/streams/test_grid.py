"""The European statistical grid: cell ids of known points, cell edges, corners.

Known coordinates: ETRS89-LAEA (EPSG:3035) is centred on 52° N 10° E with false easting
4,321,000 m and false northing 3,210,000 m, so that point projects to exactly (4321000,
3210000), a corner of every grid resolution. Near the centre the projection's scale is 1: a
thousandth of a degree of latitude is 111.2 m northward, of longitude 111.3 x cos 52° = 68.5 m
eastward. Cell codes are the INSPIRE / GEOSTAT ones: "CRS3035RES" + resolution + "mN" + the
northing of the south-west corner + "E" + its easting (Regulation (EU) 2018/1799, Art. 3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams._grid import (
    Cell,
    cell_id,
    cell_of,
    cells_of,
    corners_of_projected,
    parse_cell_id,
    project,
)


def test_the_projection_centre_is_the_false_origin() -> None:
    easting, northing = project(np.array([52.0]), np.array([10.0]))
    assert float(easting[0]) == pytest.approx(4_321_000.0, abs=1e-6)
    assert float(northing[0]) == pytest.approx(3_210_000.0, abs=1e-6)
    # Exactly on a corner floating point may land a hair below it: look just inside instead
    # (11 m north, 7 m east).
    cell = cell_of(52.0001, 10.0001)
    assert cell is not None
    assert cell.id == "CRS3035RES100mN3210000E4321000"
    assert cell_of(52.0001, 10.0001, 1000) == Cell(3210000, 4321000, 1000)


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        # 111 m north, 69 m east of the centre: one cell up, same column.
        (52.001, 10.001, "CRS3035RES100mN3210100E4321000"),
        # 111 m south, 69 m west: N 3209889 → 3209800, E 4320931 → 4320900.
        (51.999, 9.999, "CRS3035RES100mN3209800E4320900"),
        # 2 x 68.5 m = 137 m east.
        (52.0001, 10.002, "CRS3035RES100mN3210000E4321100"),
    ],
)
def test_known_offsets_from_the_centre(lat: float, lon: float, expected: str) -> None:
    cell = cell_of(lat, lon)
    assert cell is not None
    assert cell.id == expected


def test_central_paris_is_where_a_spherical_estimate_puts_it() -> None:
    # Hôtel de Ville, 48.8566 N 2.3522 E: 3.14° of latitude south of the centre (~350 km) and
    # 7.65° of longitude west at a mean latitude of ~50.4° (~543 km): around N 2,860,000
    # E 3,778,000 on a sphere. The ellipsoid and the azimuthal projection move that by a few
    # tens of kilometres, not more.
    cell = cell_of(48.8566, 2.3522, 100)
    assert cell is not None
    assert abs(cell.easting_m - 3_778_000) < 60_000
    assert abs(cell.northing_m - 2_860_000) < 60_000
    assert cell.id == f"CRS3035RES100mN{cell.northing_m}E{cell.easting_m}"


def test_a_point_on_an_edge_belongs_to_the_cell_above_and_to_the_right() -> None:
    east = np.array([3_760_700.0, 3_760_699.999, 3_760_700.0, 3_760_799.999])
    north = np.array([2_889_400.0, 2_889_400.0, 2_889_399.999, 2_889_499.999])
    n, e, ok = corners_of_projected(east, north)
    assert ok.all()
    assert list(zip(n.tolist(), e.tolist(), strict=True)) == [
        (2_889_400, 3_760_700),
        (2_889_400, 3_760_600),
        (2_889_300, 3_760_700),
        (2_889_400, 3_760_700),
    ]


def test_points_without_a_cell() -> None:
    # NaN and points that land in the negative quadrant (the far side of the globe) have none.
    _north, _east, ok = cells_of(np.array([math.nan, -60.0]), np.array([2.35, -170.0]))
    assert not ok.any()
    assert cell_of(-60.0, -170.0) is None


def test_cell_ids_round_trip_and_refuse_what_is_not_a_cell() -> None:
    cell = parse_cell_id("CRS3035RES100mN2889400E3760700")
    assert cell == Cell(2_889_400, 3_760_700, 100)
    assert cell.id == "CRS3035RES100mN2889400E3760700"
    assert parse_cell_id("CRS3035RES1000mN2889000E3760000").resolution_m == 1000
    for bad in (
        "CRS3035RES100mN2889450E3760700",  # not on the 100 m grid
        "CRS3035RES300mN2889400E3760800",  # not a grid resolution
        "CRS3035RES100mN2889400",
        "crs3035res100mn2889400e3760700",
        "",
    ):
        with pytest.raises(ValueError, match=r"cell|resolution|grid"):
            parse_cell_id(bad)
    with pytest.raises(ValueError, match="corner"):
        cell_id(2_889_401, 3_760_700)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine, mean Earth radius 6,371,008.8 m)."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def test_corners_are_a_100_m_square_counter_clockwise() -> None:
    cell = parse_cell_id("CRS3035RES100mN2889400E3760700")
    sw, se, ne, nw = cell.corners()
    for a, b in ((sw, se), (se, ne), (ne, nw), (nw, sw)):
        assert _metres(a, b) == pytest.approx(100.0, rel=0.01)
    assert _metres(sw, ne) == pytest.approx(100.0 * math.sqrt(2), rel=0.01)
    # Counter-clockwise (RFC 7946 exterior ring): positive shoelace area in (lon, lat).
    ring = [sw, se, ne, nw]
    area = sum(
        x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True)
    )
    assert area > 0
    # And the cell's own centre falls back into it.
    centre_lon = sum(p[0] for p in ring) / 4
    centre_lat = sum(p[1] for p in ring) / 4
    assert cell_of(centre_lat, centre_lon) == cell
