"""Length-checked reads from a payload, so no decoder can raise IndexError or struct.error.

Every read names the codec and the offset in the ``TruncatedError`` it raises, which is the
message ingest puts on the dead letter.
"""

from __future__ import annotations

import struct

from decoders._model import TruncatedError

__all__ = ["ByteReader"]

_U16LE = struct.Struct("<H")
_S16LE = struct.Struct("<h")
_U16BE = struct.Struct(">H")
_S16BE = struct.Struct(">h")
_U32LE = struct.Struct("<I")
_U32BE = struct.Struct(">I")


class ByteReader:
    """A cursor over ``data`` whose every read checks that the bytes are there first."""

    __slots__ = ("codec", "data", "offset")

    def __init__(self, codec: str, data: bytes, offset: int = 0) -> None:
        self.codec = codec
        self.data = data
        self.offset = offset

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def at_end(self) -> bool:
        return self.offset >= len(self.data)

    def need(self, size: int, what: str) -> None:
        """Raise ``TruncatedError`` unless ``size`` more bytes are available for ``what``."""
        if self.remaining < size:
            raise TruncatedError(
                self.codec,
                self.offset,
                f"truncated {what}: need {size} bytes, {max(self.remaining, 0)} left",
            )

    def take(self, size: int, what: str) -> bytes:
        self.need(size, what)
        start = self.offset
        self.offset += size
        return self.data[start : self.offset]

    # The hot reads check the length inline: a method call per check cost a third of decoding.

    def u8(self, what: str) -> int:
        offset = self.offset
        if offset >= len(self.data):
            self.need(1, what)  # raises with the message
        self.offset = offset + 1
        return self.data[offset]

    def _unpack(self, fmt: struct.Struct, what: str) -> int:
        offset = self.offset
        end = offset + fmt.size
        if end > len(self.data):
            self.need(fmt.size, what)  # raises with the message
        self.offset = end
        return int(fmt.unpack_from(self.data, offset)[0])

    def u16le(self, what: str) -> int:
        return self._unpack(_U16LE, what)

    def s16le(self, what: str) -> int:
        return self._unpack(_S16LE, what)

    def u16be(self, what: str) -> int:
        return self._unpack(_U16BE, what)

    def s16be(self, what: str) -> int:
        return self._unpack(_S16BE, what)

    def u32le(self, what: str) -> int:
        return self._unpack(_U32LE, what)

    def u32be(self, what: str) -> int:
        return self._unpack(_U32BE, what)

    def s24be(self, what: str) -> int:
        raw = self.take(3, what)
        return int.from_bytes(raw, "big", signed=True)
