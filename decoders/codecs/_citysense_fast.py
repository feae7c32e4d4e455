"""The citysense JSON decoder's fast path: the common well-formed messages without pydantic.

Why a module of its own: validating with the pydantic model cost ~5 µs per message, most of a
decode, and ``citysense_json`` cannot be compiled (mypyc cannot build code using pydantic's
models); this module imports no pydantic, so it can be. ``fast_decode`` returns exactly the
``Decoded`` the model's path would build, or None whenever it is not sure (an unusual shape, a
value name the model has not accepted yet, anything the model would reject): the caller then
validates with the model, so what is accepted and the error messages stay the model's.

What it takes: a JSON object with only the model's keys; ``kind`` one of the kinds; ``values`` of
plain finite floats, or integers below 2**53 (the model turns them into floats, exactly there),
named as the model already accepted (a name's validity depends on the name alone, so the fast path
never re-implements the pattern); counts and regions with exactly typed, in-range fields;
``observed_at`` as ``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`` (a form on which ``fromisoformat`` and
pydantic agree), returned in UTC as the model's path does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from decoders._model import KINDS, TRAFFIC_CLASSES, Decoded, RegionCount, TrafficCount
from decoders.codecs._fields import decoded, region_count, traffic_count

__all__ = ["fast_decode", "remember_names"]

NAME = "citysense-json"
#: Quantity names the model has accepted; bounded, refilled by later messages.
_KNOWN_NAMES: set[str] = set()
_KNOWN_NAMES_MAX = 10_000
_MESSAGE_KEYS = frozenset({"kind", "observed_at", "values", "counts", "regions"})
_COUNT_KEYS = frozenset({"line", "direction", "class", "count", "cumulative"})
#: Integers the fast path takes: where JSON, Python and pydantic's numbers surely agree.
_EXACT = 2**53
_ISO_UTC = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])",
    re.ASCII,
)


def remember_names(names: Iterable[str]) -> None:
    """Value names of a message the model accepted, for the fast path to take from now on."""
    if len(_KNOWN_NAMES) > _KNOWN_NAMES_MAX:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES.update(names)


def fast_decode(raw: object) -> Decoded | None:
    """What the model's path returns for ``raw`` (parsed JSON), or None to let the model decide."""
    if type(raw) is not dict or not _MESSAGE_KEYS.issuperset(raw):
        return None
    message: dict[str, Any] = raw
    kind = message.get("kind")
    if kind not in KINDS:  # also rules out non-strings
        return None
    values = _values(message["values"]) if "values" in message else {}
    counts = _counts(message["counts"]) if "counts" in message else []
    regions = _regions(message["regions"]) if "regions" in message else []
    if values is None or counts is None or regions is None:
        return None
    if (counts and kind != "traffic") or (regions and kind != "occupancy"):
        return None
    if not (values or counts or regions):
        return None
    out = decoded(NAME, kind)
    out.values = values
    out.counts = counts
    out.regions = regions
    observed_at = message.get("observed_at")
    if observed_at is not None:
        if type(observed_at) is not str or _ISO_UTC.fullmatch(observed_at) is None:
            return None
        try:
            out.observed_at = datetime.fromisoformat(observed_at).astimezone(UTC)
        except (ValueError, OverflowError):
            return None  # the model path says why
    return out


def _values(raw: object) -> dict[str, float] | None:
    if type(raw) is not dict:
        return None
    items: dict[Any, Any] = raw
    values: dict[str, float] = {}
    for name, value in items.items():
        if name not in _KNOWN_NAMES:
            return None
        if type(value) is float:
            number: float = value
            if number - number != 0.0:  # inf or nan (math.isfinite is a Python call here)
                return None
            values[name] = number
        elif type(value) is int and -_EXACT < value < _EXACT:
            values[name] = float(value)
        else:
            return None
    return values


def _natural(value: object, low: int) -> bool:
    """A JSON integer (not a bool) in ``low .. 2**53 - 1``."""
    if type(value) is not int:
        return False
    return low <= value < _EXACT


def _counts(raw: object) -> list[TrafficCount] | None:
    if type(raw) is not list:
        return None
    items: list[Any] = raw
    counts: list[TrafficCount] = []
    for item in items:
        if type(item) is not dict or not _COUNT_KEYS.issuperset(item):
            return None
        fields: dict[str, Any] = item
        line: Any = fields.get("line")
        direction: Any = fields.get("direction")
        traffic_class: Any = fields.get("class")
        count: Any = fields.get("count")
        cumulative: Any = fields.get("cumulative")
        if not _natural(line, 1) or (direction != "in" and direction != "out"):
            return None
        if type(traffic_class) is not str or traffic_class not in TRAFFIC_CLASSES:
            return None
        if count is None and cumulative is None:
            return None
        if (count is not None and not _natural(count, 0)) or (
            cumulative is not None and not _natural(cumulative, 0)
        ):
            return None
        counts.append(traffic_count(line, direction, traffic_class, count, cumulative))
    return counts


def _regions(raw: object) -> list[RegionCount] | None:
    if type(raw) is not list:
        return None
    items: list[Any] = raw
    regions: list[RegionCount] = []
    for item in items:
        if type(item) is not dict or len(item) != 2:
            return None
        fields: dict[str, Any] = item
        region: Any = fields.get("region")
        count: Any = fields.get("count")
        if not (_natural(region, 1) and _natural(count, 0)):
            return None
        regions.append(region_count(region, count))
    return regions
