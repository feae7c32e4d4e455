"""``python -m citysense.ops catalogue|dashboards [--write]``: regenerate or check the files.

Without ``--write`` it checks: exit status 1 and the stale file's name when the committed file
differs from what the code generates (what the tests assert too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _catalogue() -> dict[Path, str]:
    from citysense.ops import collect_metrics, metric_modules, render_markdown

    return {ROOT / "docs" / "metrics.md": render_markdown(collect_metrics(metric_modules(ROOT)))}


def _dashboards() -> dict[Path, str]:
    from citysense.ops.dashboards import DASHBOARDS_DIR, render_dashboards

    return {DASHBOARDS_DIR / name: text for name, text in render_dashboards().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m citysense.ops", description=__doc__)
    parser.add_argument("what", choices=["catalogue", "dashboards"])
    parser.add_argument("--write", action="store_true", help="write the files (else check)")
    args = parser.parse_args(argv)
    files = _catalogue() if args.what == "catalogue" else _dashboards()
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.write:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text := files[path])
            print(f"wrote {path.relative_to(ROOT)} ({len(text)} characters)")
        return 0
    for path in stale:
        print(f"stale: {path.relative_to(ROOT)} (run python -m citysense.ops {args.what} --write)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
