"""Shared check of the round-trip property ``decode(encode(m)) == m`` within resolution."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from hypothesis import strategies as st

from decoders import EMPTY_PROFILE, Decoded, DecodeError, DeviceProfile, get_codec

#: Quantity name -> the format's step for it; a value survives within half a step.
Steps = Callable[[str], float]


def steps_from(table: Mapping[str, float]) -> Steps:
    return table.__getitem__


def on_grid(low: float, high: float) -> st.SearchStrategy[float]:
    """Finite floats in the closed range the field can carry."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def assert_roundtrip(
    codec_name: str, original: Decoded, steps: Steps, profile: DeviceProfile = EMPTY_PROFILE
) -> Decoded:
    codec = get_codec(codec_name)
    fport, payload = codec.encode(original, profile)
    assert not codec.fports or fport in codec.fports
    decoded = codec.decode(payload, fport, profile)
    assert decoded.codec == codec.name
    assert decoded.kind == original.kind
    assert not decoded.partial
    assert decoded.counts == original.counts
    assert decoded.regions == original.regions
    assert decoded.observed_at == original.observed_at
    assert set(decoded.values) == set(original.values)
    for name, value in original.values.items():
        tolerance = steps(name) / 2 + 1e-9 * max(1.0, abs(value))
        assert math.isclose(decoded.values[name], value, abs_tol=tolerance), (
            name,
            value,
            decoded.values[name],
        )
    return decoded


def fports_of(codec_name: str) -> st.SearchStrategy[int | None]:
    """The codec's own fPorts, unknown (None), or any other port."""
    own = get_codec(codec_name).fports
    return st.sampled_from([None, *own]) | st.integers(1, 223)


def assert_decodes_or_rejects(codec_name: str, payload: bytes, fport: int | None) -> None:
    """Arbitrary bytes either decode or raise a ``DecodeError``, never anything else."""
    codec = get_codec(codec_name)
    try:
        decoded = codec.decode(payload, fport)
    except DecodeError as error:
        message = str(error)
    else:
        message = decoded.codec
    assert codec.name in message
