"""Kubernetes manifests: valid against the API's schemas (kubernetes-validate, strict), and the
operational promises of issue 14: a workload per stage with probes on /healthz and /readyz,
resources, a PodDisruptionBudget and an autoscaler, the sink scaled on consumer lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from citysense.ops import collect_metrics, metric_modules
from citysense.stack._prometheus import STAGE_PORTS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
#: The Kubernetes release the manifests target (kubernetes-validate ships its schemas).
VERSION = "1.33.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


@pytest.mark.parametrize(
    ("name", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifest_is_valid(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_validation_can_fail() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def workloads() -> dict[str, dict[str, Any]]:
    return {**by_kind("Deployment"), **by_kind("StatefulSet")}


def test_every_stage_has_probes_resources_pdb_and_autoscaler() -> None:
    stages = workloads()
    assert set(stages) == set(STAGE_PORTS)
    pdbs, hpas = by_kind("PodDisruptionBudget"), by_kind("HorizontalPodAutoscaler")
    for stage, workload in stages.items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [stage]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        assert port == STAGE_PORTS[stage]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CITYSENSE_HTTP_PORT"] == str(port)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert set(container["resources"]) == {"requests", "limits"}
        selector = workload["spec"]["selector"]["matchLabels"]
        assert pdbs[stage]["spec"]["selector"]["matchLabels"] == selector
        target = hpas[stage]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == (workload["kind"], stage)


def test_sink_scales_on_a_catalogued_lag_metric() -> None:
    (metric,) = by_kind("HorizontalPodAutoscaler")["sink"]["spec"]["metrics"]
    assert metric["type"] == "External"
    catalogue = {s.name for s in collect_metrics(metric_modules(ROOT))}
    assert metric["external"]["metric"]["name"] in catalogue
    assert metric["external"]["metric"]["name"] == "citysense_sink_consumer_lag_records"


def test_no_secret_value_in_the_manifests() -> None:
    """Secrets come from secretKeyRef; no manifest defines a Secret or a password literal."""
    for name, doc in documents():
        assert doc["kind"] != "Secret", name
    for path in K8S.glob("*.yaml"):
        text = path.read_text().lower()
        assert "password:" not in text, path.name
