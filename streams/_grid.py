"""The European statistical grid: WGS84 positions → 100 m cells of ETRS89-LAEA, and back.

Why this grid: it is the one European statistics publish on (Eurostat GEOSTAT population grids,
INSPIRE "Geographical grid systems", Grid_ETRS89-LAEA), so a city's map of particle levels can
be laid over census cells of the same ids. Its rules, from the INSPIRE data specification on
geographical grid systems (D2.8.I.2, v3.1, 2014) and Commission Implementing Regulation (EU)
2018/1799, Article 3:

- coordinates are ETRS89 Lambert Azimuthal Equal Area (EPSG:3035: centre 52° N 10° E, false
  easting 4,321,000 m, false northing 3,210,000 m); the grid's origin is the projection's
  (0, 0) and cells are aligned on multiples of the resolution;
- a cell's reference point is its lower left (south-west) corner;
- its code is ``CRS3035RES<resolution>mN<northing of that corner>E<easting of that corner>``,
  in metres (the regulation's 1 km grid starts ``CRS3035RES1000mN``; here
  ``CRS3035RES100mN2889400E3760700`` is a 100 m cell of central Paris).

A point on a cell edge belongs to the cell above and to the right of it (the floor of its
coordinates): cells are half-open ``[E, E + res) x [N, N + res)``, so every point is in exactly
one. Projection by pyproj (PROJ), vectorised over numpy arrays. ETRS89 and WGS84 differ by less
than a metre in Europe (they coincided in 1989 and drift about 2.5 cm a year), far below a
100 m cell and a GNSS fix's accuracy, so WGS84 degrees are taken as ETRS89 ones, as PROJ does
for EPSG:4326 → EPSG:3035 without a time-dependent transformation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from pyproj import Transformer

__all__ = [
    "CELL_ID_PATTERN",
    "Cell",
    "cell_id",
    "cell_of",
    "cells_of",
    "corners_of_projected",
    "parse_cell_id",
    "project",
]

#: Resolutions the grid defines (powers of ten, INSPIRE Grid_ETRS89-LAEA).
RESOLUTIONS: Final = (1, 10, 100, 1000, 10_000, 100_000)
CELL_ID_PATTERN: Final = re.compile(r"CRS3035RES(?P<res>[0-9]+)mN(?P<n>[0-9]+)E(?P<e>[0-9]+)")

# Built once: a Transformer costs ~10 ms to create. ``always_xy``: (lon, lat) in, (E, N) out,
# whatever the axis order EPSG declares for either CRS.
_TO_LAEA: Final = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
_TO_WGS84: Final = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, order=True)
class Cell:
    """One grid cell: its south-west corner in EPSG:3035 metres and its size."""

    northing_m: int
    easting_m: int
    resolution_m: int = 100

    @property
    def id(self) -> str:
        return cell_id(self.northing_m, self.easting_m, self.resolution_m)

    def corners(self) -> tuple[tuple[float, float], ...]:
        """The four corners as WGS84 (lon, lat), counter-clockwise from the south-west one:
        SW, SE, NE, NW. Counter-clockwise is RFC 7946's order for a polygon's exterior ring
        (section 3.1.6); the projection keeps orientation (it is not a reflection)."""
        e, n, r = self.easting_m, self.northing_m, self.resolution_m
        lon, lat = _TO_WGS84.transform(
            np.array([e, e + r, e + r, e], dtype=np.float64),
            np.array([n, n, n + r, n + r], dtype=np.float64),
        )
        return tuple((float(x), float(y)) for x, y in zip(lon, lat, strict=True))


def _check_resolution(resolution_m: int) -> None:
    if resolution_m not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution_m} m is not one of the grid's {RESOLUTIONS}")


def cell_id(northing_m: int, easting_m: int, resolution_m: int = 100) -> str:
    """The INSPIRE / GEOSTAT code of the cell whose south-west corner is given (see the module
    doc); the corner must lie on the grid of that resolution."""
    _check_resolution(resolution_m)
    if northing_m % resolution_m or easting_m % resolution_m or northing_m < 0 or easting_m < 0:
        raise ValueError(f"N{northing_m} E{easting_m} is not a corner of the {resolution_m} m grid")
    return f"CRS3035RES{resolution_m}mN{northing_m}E{easting_m}"


def parse_cell_id(text: str) -> Cell:
    """The cell a code names; ``ValueError`` for anything that is not a valid code."""
    match = CELL_ID_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a CRS3035RES<res>mN<northing>E<easting> cell code")
    cell = Cell(int(match["n"]), int(match["e"]), int(match["res"]))
    cell_id(cell.northing_m, cell.easting_m, cell.resolution_m)  # checks the alignment
    return cell


def project(lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
    """WGS84 degrees → EPSG:3035 (easting, northing) in metres; inf where PROJ cannot."""
    easting, northing = _TO_LAEA.transform(
        np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    return np.asarray(easting, dtype=np.float64), np.asarray(northing, dtype=np.float64)


def cells_of(
    lat: FloatArray, lon: FloatArray, resolution_m: int = 100
) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
    """Per point, its cell's south-west corner (northing, easting in metres, multiples of the
    resolution) and whether it has one: False for a point PROJ cannot project or that falls
    outside the grid's positive quadrant (far outside Europe)."""
    easting, northing = project(lat, lon)
    return corners_of_projected(easting, northing, resolution_m)


def corners_of_projected(
    easting: FloatArray, northing: FloatArray, resolution_m: int = 100
) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
    """:func:`cells_of` for points already in EPSG:3035 metres: the floor of each coordinate to
    the resolution (a point on an edge is in the cell above / to the right of it)."""
    _check_resolution(resolution_m)
    ok = np.isfinite(easting) & np.isfinite(northing) & (easting >= 0) & (northing >= 0)
    e = np.where(ok, easting, 0.0)
    n = np.where(ok, northing, 0.0)
    north = (np.floor(n / resolution_m) * resolution_m).astype(np.int64)
    east = (np.floor(e / resolution_m) * resolution_m).astype(np.int64)
    return north, east, ok


def cell_of(lat: float, lon: float, resolution_m: int = 100) -> Cell | None:
    """The cell of one WGS84 point, None when it has none (see :func:`cells_of`)."""
    north, east, ok = cells_of(np.array([lat]), np.array([lon]), resolution_m)
    if not ok[0]:
        return None
    return Cell(int(north[0]), int(east[0]), resolution_m)
