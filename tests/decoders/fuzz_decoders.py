"""Coverage-guided fuzzing of every codec with atheris (libFuzzer).

Run: ``python tests/decoders/fuzz_decoders.py CORPUS_DIR -runs=N``. The first byte of an input
picks the codec, the second the fPort (255 means none), the rest is the payload. Any exception
other than ``DecodeError`` is a crash. ``test_atheris.py`` seeds the corpus from the golden
vectors and runs a bounded number of inputs in ``make test``.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from decoders import DecodeError, all_codecs

CODECS = all_codecs()


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    codec = CODECS[data[0] % len(CODECS)]
    fport = None if data[1] == 255 else data[1]
    with contextlib.suppress(DecodeError):
        codec.decode(data[2:], fport)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
