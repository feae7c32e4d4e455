"""Runs every test vector in ``tests/vectors/<codec>/*.json`` against its codec.

A vector file holds ``fport``, ``hex`` and either ``expected`` (``kind``, ``values`` with the full
set of quantities, optional ``counts``, ``regions``, ``partial``, ``observed_at``, ``position``:
``{lat, lon, accuracy_m}`` or null; absent means none) compared within
``tolerance``, or ``error``: the ``reason`` of the expected ``DecodeError`` subclass. An optional
``profile`` gives the registry facts (calibration, line classes, channel map).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from decoders import DecodeError, DeviceProfile, all_codecs, get_codec

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"


def _vector_files() -> list[Path]:
    return sorted(VECTORS_DIR.glob("*/*.json"))


def _profile(raw: dict[str, Any] | None) -> DeviceProfile:
    if not raw:
        return DeviceProfile()
    return DeviceProfile(
        calibration=raw.get("calibration", {}),
        line_classes={int(k): v for k, v in raw.get("line_classes", {}).items()},
        channel_map=raw.get("channel_map", {}),
    )


@pytest.mark.parametrize("path", _vector_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    codec = get_codec(path.parent.name)
    payload = bytes.fromhex(vector["hex"].replace(" ", ""))
    fport = vector.get("fport")
    profile = _profile(vector.get("profile"))
    if "error" in vector:
        with pytest.raises(DecodeError) as caught:
            codec.decode(payload, fport, profile)
        assert caught.value.reason == vector["error"], str(caught.value)
        assert codec.name in str(caught.value)
        return
    decoded = codec.decode(payload, fport, profile)
    expected = vector["expected"]
    tolerance = float(vector.get("tolerance", 1e-6))
    assert decoded.codec == codec.name
    assert decoded.kind == expected["kind"]
    assert set(decoded.values) == set(expected["values"]), sorted(decoded.values)
    for name, value in expected["values"].items():
        assert math.isclose(decoded.values[name], value, abs_tol=tolerance), (
            name,
            decoded.values[name],
            value,
        )
    counts = [
        {
            "line": c.line,
            "direction": c.direction,
            "class": c.traffic_class,
            "count": c.count,
            "cumulative": c.cumulative,
        }
        for c in decoded.counts
    ]
    assert counts == expected.get("counts", [])
    regions = [{"region": r.region, "count": r.count} for r in decoded.regions]
    assert regions == expected.get("regions", [])
    assert decoded.partial == expected.get("partial", False)
    if "observed_at" in expected:
        assert decoded.observed_at is not None
        assert decoded.observed_at.isoformat() == expected["observed_at"]
    position = expected.get("position")
    if position is None:
        assert decoded.position is None
    else:
        assert decoded.position is not None
        assert math.isclose(decoded.position.lat, position["lat"], abs_tol=tolerance)
        assert math.isclose(decoded.position.lon, position["lon"], abs_tol=tolerance)
        assert decoded.position.accuracy_m == position["accuracy_m"]


def test_every_codec_has_vectors() -> None:
    """A registered codec without a golden vector is untested against a reference."""
    with_vectors = {p.parent.name for p in _vector_files()}
    missing = [c.name for c in all_codecs() if c.name not in with_vectors]
    assert not missing, f"codecs without vectors in {VECTORS_DIR}: {missing}"


def test_every_vector_directory_names_a_codec() -> None:
    names = {c.name for c in all_codecs()}
    stray = sorted({p.parent.name for p in _vector_files()} - names)
    assert not stray, f"vector directories for unknown codecs: {stray}"
