"""``python -m sinks.timescale``: run the sink alone (what ``citysense sink`` will call)."""

import sys

from citysense.settings import SettingsError, load_settings
from sinks.timescale._cli import run_sink


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"citysense: {exc}", file=sys.stderr)
        return 2
    return run_sink(settings)


if __name__ == "__main__":
    sys.exit(main())
