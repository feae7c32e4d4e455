"""Metric names found in PromQL expressions."""

from __future__ import annotations

import pytest

from citysense.ops import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('rate(a_total{kind="noise", reason=~"x|y"}[5m])', {"a_total"}),
        (
            "histogram_quantile(0.95, sum by (le, kind) "
            "(rate(h_seconds_bucket[$__rate_interval])))",
            {"h_seconds_bucket"},
        ),
        (
            "sum by (instance) (rate(a_total[5m])) > 0 unless sum by (instance) (b_total) > 0",
            {"a_total", "b_total"},
        ),
        ("a / on (instance) group_left (site) b", {"a", "b"}),
        ("sum(a) without (topic) > 1e6", {"a"}),
        ('a offset 5m and b{site="$site"}', {"a", "b"}),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
        ("max_over_time(a[1h:5m]) - bool 3", {"a"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
