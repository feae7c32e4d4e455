"""The citysense JSON fast path gives exactly what the pydantic model gives, or steps aside.

``_citysense_fast.fast_decode`` must return ``None`` (the model then decides) or the very
``Decoded`` that ``citysense_json._validated`` builds; hypothesis feeds both well-formed messages
and near misses (wrong types, bools for numbers, extra keys, odd timestamps, names the model
rejects).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import TRAFFIC_CLASSES, Decoded, DecodeError
from decoders.codecs import citysense_json as cj
from decoders.codecs._citysense_fast import fast_decode

GOOD_NAMES = st.sampled_from(["laeq_db", "pm2_5_ugm3", "temperature_c", "nc0_5_per_cm3"])
NAMES = GOOD_NAMES | st.sampled_from(["Laeq_db", "laeq", "a__db", "x_db\n", "2a_db", "é_db"])
GOOD_NUMBERS = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60)
NUMBERS = GOOD_NUMBERS | st.one_of(
    st.floats(), st.integers(-(2**64), 2**64), st.booleans(), st.none(), st.text(max_size=3)
)
OFFSETS = st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
GOOD_TIMESTAMPS = st.one_of(
    st.datetimes(timezones=OFFSETS).map(datetime.isoformat),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
)
TIMESTAMPS = GOOD_TIMESTAMPS | st.one_of(
    st.datetimes().map(datetime.isoformat),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T t][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
        r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?\Z"
    ),
    st.integers(0, 2**40),
    st.none(),
)
GOOD_INTS = st.integers(0, 2**64)
INTS = GOOD_INTS | st.one_of(st.integers(-2, 0), st.booleans(), st.none(), st.floats(0, 9))
GOOD_COUNTS = st.fixed_dictionaries(
    {
        "line": st.integers(1, 2**64),
        "direction": st.sampled_from(["in", "out"]),
        "class": st.sampled_from(TRAFFIC_CLASSES),
    },
    optional={"count": GOOD_INTS | st.none(), "cumulative": GOOD_INTS | st.none()},
)
COUNTS = GOOD_COUNTS | st.fixed_dictionaries(
    {
        "line": INTS,
        "direction": st.sampled_from(["in", "out", "up", None]),
        "class": st.sampled_from(["car", "bicycle", "boat", None]),
    },
    optional={"count": INTS, "cumulative": INTS, "traffic_class": st.just("car")},
)
GOOD_REGIONS = st.fixed_dictionaries({"region": st.integers(1, 2**64), "count": GOOD_INTS})
REGIONS = GOOD_REGIONS | st.fixed_dictionaries(
    {"region": INTS, "count": INTS}, optional={"x": st.just(1)}
)
KINDS = st.sampled_from(["noise", "air", "traffic", "occupancy"])
GOOD_MESSAGES = st.one_of(
    st.fixed_dictionaries(
        {"kind": KINDS, "values": st.dictionaries(GOOD_NAMES, GOOD_NUMBERS, min_size=1)},
        optional={"observed_at": GOOD_TIMESTAMPS | st.none()},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("traffic"), "counts": st.lists(GOOD_COUNTS, min_size=1, max_size=3)},
        optional={"values": st.dictionaries(GOOD_NAMES, GOOD_NUMBERS), "observed_at": TIMESTAMPS},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("occupancy"), "regions": st.lists(GOOD_REGIONS, min_size=1, max_size=3)},
        optional={"values": st.dictionaries(GOOD_NAMES, GOOD_NUMBERS), "observed_at": TIMESTAMPS},
    ),
)
MESSAGES = GOOD_MESSAGES | st.fixed_dictionaries(
    {"kind": KINDS | st.sampled_from(["sound", None])},
    optional={
        "values": st.dictionaries(NAMES, NUMBERS, max_size=4) | st.none(),
        "observed_at": TIMESTAMPS,
        "counts": st.lists(COUNTS, max_size=3) | st.none(),
        "regions": st.lists(REGIONS, max_size=3) | st.none(),
        "extra": st.just(1),
    },
)


def _model(raw: Any) -> Decoded | str:
    try:
        return cj._validated(raw)
    except (DecodeError, OverflowError) as exc:
        return repr(exc)


def _fast(raw: Any) -> Decoded | str | None:
    try:
        return fast_decode(raw)
    except OverflowError as exc:  # astimezone at the ends of the calendar, as on the model's path
        return repr(exc)


@settings(max_examples=1500, deadline=None)
@given(MESSAGES)
def test_fast_path_agrees_with_the_model(raw: dict[str, Any]) -> None:
    expected = _model(raw)  # first, so that the names it accepts are known to the fast path
    fast = _fast(raw)
    if fast is not None:
        assert repr(fast) == repr(expected)
        assert fast == expected
