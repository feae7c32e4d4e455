"""Fuzzing every registered codec: random and mutated bytes raise only ``DecodeError``.

Hypothesis drives random payloads, random fPorts and mutations (bit flips, truncation,
duplication, splices) of the golden vectors; the corpus of seeds is the vectors themselves, so it
stays small in the repository. Anything other than a ``DecodeError`` (IndexError, struct.error,
KeyError, ...) fails the test with the offending payload in the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoders import Codec, Decoded, DecodeError, all_codecs

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"
CODECS = all_codecs()


def _seeds(codec: Codec) -> list[tuple[int | None, bytes]]:
    seeds: list[tuple[int | None, bytes]] = []
    for path in sorted((VECTORS_DIR / codec.name).glob("*.json")):
        vector = json.loads(path.read_text())
        seeds.append((vector.get("fport"), bytes.fromhex(vector["hex"].replace(" ", ""))))
    return seeds


def _decode_only_decode_errors(codec: Codec, payload: bytes, fport: int | None) -> None:
    try:
        result = codec.decode(payload, fport)
    except DecodeError as exc:
        message = str(exc)
        assert codec.name in message
        return
    assert isinstance(result, Decoded)
    assert result.codec == codec.name
    for name, value in result.values.items():
        assert isinstance(value, float), (name, value)


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[tuple[int | None, bytes]]) -> tuple[int | None, bytes]:
    fport, payload = draw(st.sampled_from(seeds))
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "splice"]))
        if op == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "insert":
            index = draw(st.integers(0, len(data)))
            data[index:index] = draw(st.binary(min_size=1, max_size=4))
        elif op == "duplicate" and data:
            data.extend(data[: draw(st.integers(1, len(data)))])
        elif op == "splice":
            _other_port, other = draw(st.sampled_from(seeds))
            data = data[: len(data) // 2] + bytearray(other[len(other) // 2 :])
    if draw(st.booleans()):
        fport = draw(st.one_of(st.none(), st.integers(0, 255)))
    return fport, bytes(data)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=64), fport=st.one_of(st.none(), st.integers(0, 255)))
def test_random_bytes_raise_only_decode_errors(
    codec: Codec, payload: bytes, fport: int | None
) -> None:
    _decode_only_decode_errors(codec, payload, fport)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_vectors_raise_only_decode_errors(codec: Codec, data: st.DataObject) -> None:
    seeds = _seeds(codec)
    assert seeds, f"{codec.name} has no vectors to mutate"
    fport, payload = data.draw(_mutated(seeds))
    _decode_only_decode_errors(codec, payload, fport)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_empty_payload_is_a_decode_error(codec: Codec) -> None:
    """The simulator relies on this to make malformed messages that every codec rejects."""
    with pytest.raises(DecodeError):
        codec.decode(b"", codec.fports[0] if codec.fports else None)
