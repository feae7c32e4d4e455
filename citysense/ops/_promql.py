"""The metric names a PromQL expression reads, for the consistency tests and the catalogue.

A small lexer over the PromQL grammar (https://prometheus.io/docs/prometheus/latest/querying/
basics/): strings, label matchers in braces, durations in brackets, grouping clauses, function
names (an identifier followed by ``(``) and keywords are skipped; the identifiers left are metric
names. Whether the expression is valid PromQL is for a real Prometheus to say (the tests send
every one to the test stack's); this only has to find the names in valid expressions.
"""

from __future__ import annotations

import re

__all__ = ["metric_names"]

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "inf", "nan", "atan2", "start", "end",
    }
)  # fmt: skip
#: Grafana's template variables ($__rate_interval, $site) are not PromQL names.
_VARIABLE = re.compile(r"\$\{?[\w]+\}?")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by ``expr`` (Grafana variables allowed)."""
    text = _STRING.sub(" ", expr)
    text = _VARIABLE.sub("1", text)
    text = _BRACKETS.sub(" ", text)
    text = _BRACES.sub(" ", text)  # label matchers: label names, not metrics
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
