"""Length-checked reads from a payload, so no decoder can raise IndexError or struct.error.

Every read names the codec and the offset in the ``TruncatedError`` it raises, which is the
message ingest puts on the dead letter.
"""

from __future__ import annotations

from decoders._model import TruncatedError

__all__ = ["ByteReader"]


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

    # Multi-byte reads assemble the integer from bytes: compiled, indexing bytes is a C primitive,
    # while a struct.Struct call goes through the Python call protocol and builds a tuple.

    def _at(self, size: int, what: str) -> int:
        """The offset of the next ``size`` bytes, after moving past them (raises when short)."""
        offset = self.offset
        end = offset + size
        if end > len(self.data):
            self.need(size, what)  # raises with the message
        self.offset = end
        return offset

    def u16le(self, what: str) -> int:
        offset = self._at(2, what)
        data = self.data
        return data[offset] | data[offset + 1] << 8

    def s16le(self, what: str) -> int:
        value = self.u16le(what)
        return value - 0x10000 if value & 0x8000 else value

    def u16be(self, what: str) -> int:
        offset = self._at(2, what)
        data = self.data
        return data[offset] << 8 | data[offset + 1]

    def s16be(self, what: str) -> int:
        value = self.u16be(what)
        return value - 0x10000 if value & 0x8000 else value

    def u32le(self, what: str) -> int:
        offset = self._at(4, what)
        data = self.data
        return (
            data[offset] | data[offset + 1] << 8 | data[offset + 2] << 16 | data[offset + 3] << 24
        )

    def u32be(self, what: str) -> int:
        offset = self._at(4, what)
        data = self.data
        return (
            data[offset] << 24 | data[offset + 1] << 16 | data[offset + 2] << 8 | data[offset + 3]
        )

    def s24be(self, what: str) -> int:
        offset = self._at(3, what)
        data = self.data
        value = data[offset] << 16 | data[offset + 1] << 8 | data[offset + 2]
        return value - 0x100_0000 if value & 0x80_0000 else value
