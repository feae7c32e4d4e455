"""Compile the hot pure-Python modules to C extensions with mypyc, next to their sources.

Why: decoding a payload and writing its Avro value is pure Python run once per message; mypyc
(the mypy project's compiler for type-annotated Python) turns these strictly typed modules into C
extensions about twice as fast, with no change to the code. The ``.py`` files stay the source
of truth and the fallback: Python imports the ``.so`` beside a module when it exists, the
``.py`` otherwise. ``make native`` runs this (``make setup`` and ``make test`` call it);
``make clean`` removes the extensions. Modules left out: those importing pydantic
(``citysense_json``: mypyc 2.4 emits C that does not compile for ``pydantic.main``).

Usage: ``python deploy/scripts/build_native.py`` (from the repository root); ``--list`` prints
the modules' paths, for the Makefile's dependencies.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The modules compiled, relative to the repository root.
NATIVE_MODULES: tuple[str, ...] = (
    "decoders/_reader.py",
    "decoders/_model.py",
    "decoders/codecs/__init__.py",
    "decoders/codecs/_decentlab.py",
    "decoders/codecs/_fields.py",
    "decoders/codecs/_milesight.py",
    "decoders/codecs/browan_tbsl100.py",
    "decoders/codecs/cayenne_lpp.py",
    "decoders/codecs/decentlab_dl_ac.py",
    "decoders/codecs/decentlab_dl_pm.py",
    "decoders/codecs/elsys.py",
    "decoders/codecs/lorasoundkit.py",
    "decoders/codecs/milesight_am307.py",
    "decoders/codecs/milesight_vs121.py",
    "decoders/codecs/milesight_vs133.py",
    "decoders/codecs/milesight_ws302.py",
    "decoders/codecs/parametric_pcr2.py",
    "decoders/codecs/_citysense_fast.py",
    "schemas/_avro.py",
    "schemas/_measurement_encoder.py",
    "schemas/_aggregate_codec.py",
    "decoders/envelopes.py",
    "ingest/_router.py",
    "ingest/_records.py",
    "ingest/_wire.py",
    "ingest/_acks.py",
    "sinks/timescale/_copyrow.py",
    "streams/_extract.py",
)


def main() -> None:
    if sys.argv[1:] == ["--list"]:
        print(" ".join(NATIVE_MODULES))
        return
    import os

    from mypyc.build import mypycify
    from setuptools import setup

    os.chdir(ROOT)
    (ROOT / "build" / "native").mkdir(parents=True, exist_ok=True)
    sys.argv = [sys.argv[0], "build_ext", "--inplace", "--build-temp", "build/native"]
    setup(
        name="citysense-native",
        packages=[],
        py_modules=[],
        ext_modules=mypycify(list(NATIVE_MODULES), opt_level="3", target_dir="build/native"),
    )
    # setuptools skips a module whose generated C did not change, leaving its extension older
    # than an edited (e.g. reformatted) source; tests refuse stale extensions, so date them now.
    for module in NATIVE_MODULES:
        source = ROOT / module
        for extension in source.parent.glob(f"{source.stem}.cpython-*.so"):
            extension.touch()


if __name__ == "__main__":
    main()
