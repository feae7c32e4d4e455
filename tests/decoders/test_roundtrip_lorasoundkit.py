"""Round trip ``decode(encode(m)) == m`` for the LoRaSoundkit codec."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from decoders import Decoded
from decoders.codecs.lorasoundkit import NAMES
from tests.decoders._roundtrip import (
    assert_decodes_or_rejects,
    assert_roundtrip,
    fports_of,
    on_grid,
)


@given(st.lists(on_grid(0, 150), min_size=len(NAMES), max_size=len(NAMES)))
def test_lorasoundkit(levels: list[float]) -> None:
    original = Decoded(
        codec="lorasoundkit", kind="noise", values=dict(zip(NAMES, levels, strict=True))
    )
    # The scale byte is ceil(loudest level), the step scale / 255.
    step = max(1, math.ceil(max(levels))) / 255
    assert_roundtrip("lorasoundkit", original, lambda name: step)


@given(st.binary(max_size=64), fports_of("lorasoundkit"))
def test_lorasoundkit_garbage(payload: bytes, fport: int | None) -> None:
    assert_decodes_or_rejects("lorasoundkit", payload, fport)
