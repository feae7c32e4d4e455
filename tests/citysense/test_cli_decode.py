"""``citysense decode``: every codec through the CLI, the error path, and ``--list``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citysense.cli import app
from decoders import all_codecs

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"
runner = CliRunner()


def _first_valid_vector(codec: str) -> dict[str, object]:
    for path in sorted((VECTORS_DIR / codec).glob("*.json")):
        vector: dict[str, object] = json.loads(path.read_text())
        if "expected" in vector and "profile" not in vector:
            return vector
    raise AssertionError(f"{codec}: no valid vector without a profile")


@pytest.mark.parametrize("codec", [c.name for c in all_codecs()])
def test_decode_prints_the_canonical_measurement(codec: str) -> None:
    vector = _first_valid_vector(codec)
    args = ["decode", "--codec", codec]
    if vector.get("fport") is not None:
        args += ["--fport", str(vector["fport"])]
    result = runner.invoke(app, [*args, str(vector["hex"]).replace(" ", "")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) >= {"codec", "kind", "values", "counts", "regions", "partial"}
    expected = vector["expected"]
    assert isinstance(expected, dict)
    assert printed["codec"] == codec
    assert printed["kind"] == expected["kind"]
    assert set(printed["values"]) == set(expected["values"])
    tolerance = float(str(vector.get("tolerance", 1e-6)))
    for name, value in expected["values"].items():
        assert math.isclose(printed["values"][name], value, abs_tol=tolerance)
    assert printed["counts"] == expected.get("counts", [])
    assert printed["regions"] == expected.get("regions", [])
    assert printed["partial"] == expected.get("partial", False)


def test_decode_ws302_reference_vector_exact_output() -> None:
    result = runner.invoke(
        app, ["decode", "--codec", "milesight-ws302", "--fport", "85", "017564055B053F02DA016A02"]
    )
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed["values"] == pytest.approx(
        {"battery_pct": 100, "laf_db": 57.5, "laeq_db": 47.4, "lafmax_db": 61.8}
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--codec", "browan-tbsl100", "--fport", "42", "01"], "fPort"),
        (["--codec", "milesight-ws302", "--fport", "85", "0175"], "truncated"),
        (["--codec", "no-such-codec", "00"], "unknown codec"),
        (["--codec", "milesight-ws302", "zz"], "not hexadecimal"),
        (["0175"], "--codec"),
    ],
)
def test_decode_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["decode", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert message.lower() in lines[0].lower()


def test_decode_list_names_every_codec_with_kinds_and_fports() -> None:
    result = runner.invoke(app, ["decode", "--list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(all_codecs())
    ws302 = next(line for line in lines if line.startswith("milesight-ws302 "))
    assert "noise" in ws302
    assert "85" in ws302
