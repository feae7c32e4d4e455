"""Runs the atheris harness for a bounded number of inputs, seeded from the golden vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from decoders import all_codecs

HERE = Path(__file__).resolve().parent
VECTORS_DIR = HERE.parent / "vectors"


def test_atheris_finds_no_exception_other_than_decode_error(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, codec in enumerate(all_codecs()):
        for path in sorted((VECTORS_DIR / codec.name).glob("*.json")):
            vector = json.loads(path.read_text())
            fport = vector.get("fport")
            header = bytes([index, 255 if fport is None else fport])
            payload = bytes.fromhex(vector["hex"].replace(" ", ""))
            (corpus / f"{codec.name}-{path.stem}").write_bytes(header + payload)
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_decoders.py"),
            str(corpus),
            "-runs=30000",
            "-max_len=96",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 30000 runs" in result.stderr
