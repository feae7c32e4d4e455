"""The alerting rules and scrape configurations, checked by Prometheus's own ``promtool``.

``promtool test rules`` runs the cases in ``deploy/prometheus/tests/`` (series that must fire and
neighbours that must not); ``check config`` also loads the rule files a configuration names.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from citysense.stack._prometheus import STAGE_PORTS, prometheus_config, rules_dir

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", *map(str, sorted((PROMETHEUS / "rules").glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    cases = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert cases
    result = promtool("test", "rules", *map(str, cases), cwd=PROMETHEUS / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    """An alert nobody tested or documented is noise at 3 a.m."""
    rules = yaml.safe_load((PROMETHEUS / "rules" / "citysense.rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        case["alertname"]
        for path in (PROMETHEUS / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) <= tested, f"alerts never seen firing in a test: {set(alerts) - tested}"
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        # GitHub's anchor of a heading: lower case, spaces as hyphens.
        "#" + line.lstrip("#").strip().lower().replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts.items():
        link = rule["annotations"]["runbook"]
        assert link.startswith("docs/runbook.md#"), name
        assert link.removeprefix("docs/runbook.md") in anchors, f"{name}: {link} has no section"


def test_production_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # It must have loaded the rules, not an empty glob.
    assert "rules/citysense.rules.yml" in result.stdout + result.stderr


def test_production_config_scrapes_every_stage_on_its_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "citysense"]
    seen = {
        group["labels"]["stage"]: int(target.rpartition(":")[2])
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert seen == dict(STAGE_PORTS)


def test_embedded_config_is_valid_and_loads_the_same_rules(tmp_path: Path) -> None:
    rules = rules_dir()
    assert rules == PROMETHEUS / "rules"
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config({"run": 28080, **STAGE_PORTS}, [rules / "*.yml"]))
    result = promtool("check", "config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rule_count = sum(
        len(group["rules"])
        for path in rules.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
    )
    assert f"SUCCESS: {rule_count} rules found" in result.stdout
    parsed = yaml.safe_load(config.read_text())
    targets = [t for g in parsed["scrape_configs"][0]["static_configs"] for t in g["targets"]]
    assert targets == [f"127.0.0.1:{p}" for p in (28080, 28081, 28082, 28083, 28084)]


@pytest.mark.parametrize("bad", ["rate(", "sum by (instance) (up) >"])
def test_promtool_rejects_a_broken_expression(tmp_path: Path, bad: str) -> None:
    """The checks above could fail: a broken expression makes ``check rules`` fail."""
    path = tmp_path / "bad.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": bad}]}]})
    )
    assert promtool("check", "rules", str(path)).returncode != 0
