"""Registry of codecs by name: each codec is a pure decoder and its inverse encoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from decoders._model import EMPTY_PROFILE, Decoded, DeviceProfile, Kind

__all__ = ["Codec", "DecodeFn", "EncodeFn", "all_codecs", "get_codec", "register"]

#: ``decode(payload, fport, profile) -> Decoded``; raises only ``DecodeError``.
DecodeFn = Callable[[bytes, "int | None", DeviceProfile], Decoded]
#: ``encode(decoded, profile) -> (fport, payload)``; the inverse of decode within resolution.
EncodeFn = Callable[[Decoded, DeviceProfile], tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Codec:
    """A registered payload format.

    ``kinds`` lists the sensor kinds the codec can report (the first is the default);
    ``fports`` the LoRaWAN fPorts it accepts (empty: any, e.g. a JSON payload on the raw topic).
    """

    name: str
    kinds: tuple[Kind, ...]
    fports: tuple[int, ...]
    decode_fn: DecodeFn
    encode_fn: EncodeFn
    description: str

    def decode(
        self, payload: bytes, fport: int | None = None, profile: DeviceProfile = EMPTY_PROFILE
    ) -> Decoded:
        return self.decode_fn(payload, fport, profile)

    def encode(self, decoded: Decoded, profile: DeviceProfile = EMPTY_PROFILE) -> tuple[int, bytes]:
        return self.encode_fn(decoded, profile)


_CODECS: dict[str, Codec] = {}


def register(codec: Codec) -> Codec:
    """Add a codec; a second codec with the same name is a programming error."""
    if codec.name in _CODECS:
        raise ValueError(f"codec {codec.name!r} registered twice")
    _CODECS[codec.name] = codec
    return codec


def get_codec(name: str) -> Codec:
    """The codec called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _CODECS[name]
    except KeyError:
        known = ", ".join(sorted(_CODECS))
        raise KeyError(f"unknown codec {name!r} (known: {known})") from None


def all_codecs() -> list[Codec]:
    """Every registered codec, sorted by name."""
    return [_CODECS[name] for name in sorted(_CODECS)]
