"""What the compiled Avro encoder and decoder share: a buffer of generated source lines."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SourceBuilder"]


class SourceBuilder:
    """Lines of one generated function, its globals (helpers and constants), fresh names."""

    def __init__(self, helpers: Mapping[str, object]) -> None:
        self.lines: list[str] = []
        self.globals: dict[str, object] = dict(helpers)
        self.counter = 0
        self.open_records: list[str] = []

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: object) -> str:
        name = self.fresh("_const")
        self.globals[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)
