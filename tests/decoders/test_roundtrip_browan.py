"""Round trip ``decode(encode(m)) == m`` for the Browan TBSL100 codec."""

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

STEPS = steps_from(
    {"threshold_event": 1.0, "battery_v": 0.1, "board_temperature_c": 1.0, "la_db": 1.0}
)


@given(
    st.fixed_dictionaries(
        {
            "threshold_event": st.sampled_from([0.0, 1.0]),
            "battery_v": on_grid(2.5, 4.0),
            "board_temperature_c": on_grid(-32, 95),
        },
        optional={"la_db": on_grid(0, 254)},
    )
)
def test_tbsl100(values: dict[str, float]) -> None:
    original = Decoded(codec="browan-tbsl100", kind="noise", values=values)
    assert_roundtrip("browan-tbsl100", original, STEPS)


@given(st.binary(max_size=64), fports_of("browan-tbsl100"))
def test_browan_tbsl100_garbage(payload: bytes, fport: int | None) -> None:
    assert_decodes_or_rejects("browan-tbsl100", payload, fport)
