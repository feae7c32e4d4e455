"""Round trip ``decode(encode(m)) == m`` for the Elsys codec."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from decoders import Decoded
from tests.decoders._roundtrip import (
    assert_decodes_or_rejects,
    assert_roundtrip,
    fports_of,
    on_grid,
    steps_from,
)

ELSYS_FIELDS = {
    # name: (strategy, step)
    "temperature_c": (on_grid(-3276.8, 3276.7), 0.1),
    "humidity_pct": (on_grid(0, 100), 1.0),
    "light_lux": (on_grid(0, 65535), 1.0),
    "motion_count": (st.integers(0, 0xFF).map(float), 1.0),
    "co2_ppm": (on_grid(0, 65535), 1.0),
    "battery_v": (on_grid(0, 65.535), 0.001),
    "pressure_hpa": (on_grid(0, 0xFFFF_FFFF / 1000), 0.001),
    "tvoc_ppb": (on_grid(0, 65535), 1.0),
}
SOUND_FIELDS = {"lamax_db": (on_grid(0, 255), 1.0), "laeq_db": (on_grid(0, 255), 1.0)}
STEPS = steps_from({n: s for n, (_, s) in (ELSYS_FIELDS | SOUND_FIELDS).items()})


@given(
    st.fixed_dictionaries({}, optional={n: s for n, (s, _) in ELSYS_FIELDS.items()}),
    st.none() | st.fixed_dictionaries({n: s for n, (s, _) in SOUND_FIELDS.items()}),
)
def test_elsys(climate: dict[str, float], sound: dict[str, float] | None) -> None:
    values = climate | (sound or {})
    if not values:
        values = {"motion_count": 0.0}
    original = Decoded(codec="elsys", kind="air" if sound is None else "noise", values=values)
    assert_roundtrip("elsys", original, STEPS)


@given(st.binary(max_size=64), fports_of("elsys"))
def test_elsys_garbage(payload: bytes, fport: int | None) -> None:
    assert_decodes_or_rejects("elsys", payload, fport)
