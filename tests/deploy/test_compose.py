"""deploy/compose.yaml against the Compose Specification's JSON schema, and what issue 14 asks.

``docker compose config`` is not available here, so the file is checked with the specification's
own schema, vendored in tests/deploy/schemas/compose-spec.json (github.com/compose-spec/
compose-spec, schema/compose-spec.json at 170098ba07d9f53c383a41bfd4c5166b0a4529a6, Apache-2.0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from citysense.stack._prometheus import STAGE_PORTS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "compose-spec.json").read_text())


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_file_matches_the_specification() -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(compose())
    ]
    assert errors == []


def test_the_schema_catches_a_mistake() -> None:
    broken = compose()
    broken["services"]["sink"]["depends_on"] = "migrate"  # a list or a mapping
    broken["services"]["sink"]["restart_policy"] = "always"  # no such key
    assert len(list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken))) >= 2


def test_services() -> None:
    services = compose()["services"]
    # Kafka in KRaft mode, three brokers that are also the controller quorum.
    kafka = [s for name, s in services.items() if name.startswith("kafka-")]
    assert len(kafka) == 3
    node_ids = sorted(int(s["environment"]["KAFKA_NODE_ID"]) for s in kafka)
    assert node_ids == [1, 2, 3]
    for broker in kafka:
        env = broker["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    # Each stage its own service from the one image, on its own port.
    for stage, port in STAGE_PORTS.items():
        service = services[stage]
        assert service["command"] == [stage]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert int(service["environment"]["CITYSENSE_HTTP_PORT"]) == port
        assert service["environment"]["CITYSENSE_KAFKA_IDEMPOTENCE"] == "true"
    for name in ("mosquitto", "timescaledb", "prometheus", "grafana"):
        assert name in services


def test_prometheus_and_grafana_mount_the_repository_files() -> None:
    services = compose()["services"]
    mounts = [
        v.split(":")[0] for name in ("prometheus", "grafana") for v in services[name]["volumes"]
    ]
    for source in ("./prometheus", "./grafana/provisioning", "./grafana/dashboards"):
        assert source in mounts
        assert (DEPLOY / source).is_dir()


def test_mosquitto_is_tls_only_with_per_user_credentials() -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    listeners = re.findall(r"^listener\s+(\d+)", conf, re.MULTILINE)
    assert listeners == ["8883"]
    assert re.search(r"^allow_anonymous false$", conf, re.MULTILINE)
    for directive in ("certfile", "keyfile", "password_file", "acl_file", "persistence true"):
        assert re.search(rf"^{directive}\b", conf, re.MULTILINE), directive


@pytest.mark.parametrize("path", ["compose.yaml", "env.example", "mosquitto/mosquitto.conf"])
def test_no_password_committed(path: str) -> None:
    text = (DEPLOY / path).read_text()
    # Every password is a ${VARIABLE} (compose) or left empty (env.example).
    for line in text.splitlines():
        match = re.match(r"\s*([A-Z_]*PASSWORD[A-Z_]*)\s*[:=]\s*(.*)$", line)
        if match:
            assert match.group(2) == "" or match.group(2).startswith("${"), line


def test_dockerfile_runs_the_cli_with_the_stage_as_command() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["citysense"]' in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.MULTILINE)
    # Every package the wheel holds is copied into the image.
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"packages = \[([^\]]*)\]", pyproject)
    assert packages is not None
    for package in re.findall(r'"(\w+)"', packages.group(1)):
        assert f"COPY {package} {package}" in dockerfile, package
