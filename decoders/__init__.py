"""Pure decoders: vendor payload bytes (+ fPort) → canonical measurement.

Importing the package registers every codec. Public surface: the registry (``get_codec``,
``all_codecs``), the model (``Decoded``, ``TrafficCount``, ``RegionCount``, ``DeviceProfile``) and
the ``DecodeError`` hierarchy.
"""

# Codec modules register themselves on import; keep this list sorted.
from decoders import codecs as _codecs  # noqa: F401  (import for registration side effect)
from decoders._model import (
    EMPTY_PROFILE,
    KINDS,
    TRAFFIC_CLASSES,
    Decoded,
    DecodeError,
    DeviceProfile,
    InvalidPayloadError,
    Kind,
    OutOfRangeError,
    Position,
    RegionCount,
    TrafficCount,
    TruncatedError,
    UnknownChannelError,
    UnknownFPortError,
)
from decoders._registry import Codec, all_codecs, get_codec, register

__all__ = [
    "EMPTY_PROFILE",
    "KINDS",
    "TRAFFIC_CLASSES",
    "Codec",
    "DecodeError",
    "Decoded",
    "DeviceProfile",
    "InvalidPayloadError",
    "Kind",
    "OutOfRangeError",
    "Position",
    "RegionCount",
    "TrafficCount",
    "TruncatedError",
    "UnknownChannelError",
    "UnknownFPortError",
    "all_codecs",
    "get_codec",
    "register",
]
