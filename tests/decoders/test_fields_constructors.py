"""The fast constructors of ``_fields`` build exactly what the dataclass constructors build.

They set every field by hand (compiled, without the dataclass ``__init__``), so a field added to
``Decoded``, ``TrafficCount`` or ``RegionCount`` must be added to them too: the comparisons below
then fail (an unset attribute of a compiled class raises AttributeError) until it is.
"""

from __future__ import annotations

import dataclasses

import pytest

from decoders import Decoded, RegionCount, TrafficCount
from decoders.codecs._fields import decoded, region_count, traffic_count


def test_decoded_is_the_empty_dataclass() -> None:
    built = decoded("milesight-vs133", "traffic")
    assert built == Decoded(codec="milesight-vs133", kind="traffic")
    assert dataclasses.asdict(built) == dataclasses.asdict(Decoded("milesight-vs133", "traffic"))
    assert type(built) is Decoded
    assert built.values is not decoded("milesight-vs133", "traffic").values  # fresh containers


def test_traffic_count_is_the_dataclass() -> None:
    built = traffic_count(2, "out", "bicycle", None, 7)
    expected = TrafficCount(2, "out", "bicycle", None, 7)
    assert built == expected
    assert hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    assert type(built) is TrafficCount


def test_region_count_is_the_dataclass() -> None:
    built = region_count(3, 0)
    assert built == RegionCount(3, 0)
    assert hash(built) == hash(RegionCount(3, 0))
    assert type(built) is RegionCount


def test_built_counts_stay_frozen() -> None:
    built = traffic_count(1, "in", "car", 1, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.count = 2  # type: ignore[misc]
