"""The fast constructors of ``_fields`` build exactly what the dataclass constructors build.

``decoded`` sets every field by hand (compiled, without the dataclass ``__init__``), and
``TrafficCount`` and ``RegionCount`` spell out their ``__init__``, so a field added to one of them
must be added there too: the comparisons below then fail until it is.
"""

from __future__ import annotations

import dataclasses
import inspect

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


def test_counts_init_stores_every_field() -> None:
    """``TrafficCount`` and ``RegionCount`` spell out their ``__init__`` and ``__hash__``."""
    for cls in (TrafficCount, RegionCount):
        assert list(inspect.signature(cls).parameters) == [f.name for f in dataclasses.fields(cls)]
    built = traffic_count(1, "in", "car", 1, None)
    assert dataclasses.astuple(built) == (1, "in", "car", 1, None)
    assert hash(built) == hash((1, "in", "car", 1, None))
    assert hash(region_count(2, 5)) == hash((2, 5))
