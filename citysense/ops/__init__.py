"""Operations as code: the metrics catalogue, naming rules, PromQL names, Grafana dashboards.

``python -m citysense.ops catalogue --write`` regenerates ``docs/metrics.md``;
``python -m citysense.ops dashboards --write`` regenerates ``deploy/grafana/dashboards/``.
The dashboards module needs the ``grafana-foundation-sdk`` dev dependency, so it is not
imported here.
"""

from citysense.ops._catalogue import (
    PACKAGES,
    MetricSpec,
    collect_metrics,
    metric_modules,
    render_markdown,
    unit_of,
)
from citysense.ops._naming import BOUNDED_LABELS, SUBSYSTEMS, naming_violations
from citysense.ops._promql import metric_names

__all__ = [
    "BOUNDED_LABELS",
    "PACKAGES",
    "SUBSYSTEMS",
    "MetricSpec",
    "collect_metrics",
    "metric_modules",
    "metric_names",
    "naming_violations",
    "render_markdown",
    "unit_of",
]
