"""``python -m tests._faulty module:Class.method ARGS...``: the citysense CLI with one fault.

The named method (a coroutine method of a stage, such as a background task's loop) is replaced
by one that raises ``RuntimeError("injected fault")``; everything else is the real CLI. Used by
the lifecycle tests to make a background task die inside a real stage process.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def _inject(target: str) -> None:
    module_name, _, attribute = target.partition(":")
    class_name, _, method = attribute.partition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not callable(getattr(cls, method, None)):
        raise SystemExit(f"no method {attribute} in {module_name}")

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("injected fault")

    setattr(cls, method, broken)


def main() -> None:
    _inject(sys.argv[1])
    from citysense.cli import app

    app(sys.argv[2:], prog_name="citysense")


if __name__ == "__main__":
    main()
