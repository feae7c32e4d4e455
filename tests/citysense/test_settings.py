"""Settings: sources, precedence, validation messages, secret masking."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from citysense.clients import consumer_options
from citysense.settings import KafkaSettings, Settings, SettingsError, load_settings, mask_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CITYSENSE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CITYSENSE_STACK_DIR", str(tmp_path / "stack"))


def test_environment_sets_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSENSE_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("CITYSENSE_KAFKA_LINGER_MS", "20")
    monkeypatch.setenv("CITYSENSE_LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert settings.kafka.bootstrap == "k1:9092,k2:9092"
    assert settings.kafka.linger_ms == 20
    assert settings.log_level == "DEBUG"


def test_toml_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "citysense.toml"
    config.write_text('[kafka]\nbootstrap = "toml:1"\nlinger_ms = 50\n[http]\nport = 9000\n')
    monkeypatch.setenv("CITYSENSE_CONFIG", str(config))
    monkeypatch.setenv("CITYSENSE_KAFKA_BOOTSTRAP", "env:2")
    settings = load_settings()
    assert settings.kafka.bootstrap == "env:2"
    assert settings.kafka.linger_ms == 50
    assert settings.http.port == 9000


def test_stack_env_file_is_below_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "env").write_text(
        "CITYSENSE_KAFKA_BOOTSTRAP=stack:1\nCITYSENSE_KAFKA_IDEMPOTENCE=false\n"
    )
    settings = load_settings()
    assert settings.kafka.bootstrap == "stack:1"
    assert settings.kafka.idempotence is False
    monkeypatch.setenv("CITYSENSE_KAFKA_BOOTSTRAP", "prod:9092")
    assert load_settings().kafka.bootstrap == "prod:9092"


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSENSE_CONFIG", "/nonexistent/citysense.toml")
    with pytest.raises(SettingsError, match="CITYSENSE_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("CITYSENSE_KAFKA_ACKS", "2", "kafka.acks"),
        ("CITYSENSE_DATABASE_URL", "mysql://x@h/db", "database.url"),
        ("CITYSENSE_MQTT_KEEPALIVE_S", "1", "mqtt.keepalive_s"),
        ("CITYSENSE_SHUTDOWN_DEADLINE_S", "-1", "shutdown_deadline_s"),
        ("CITYSENSE_KAFKA_LINGER_MS", "-1", "kafka.linger_ms"),
        ("CITYSENSE_INGEST_LINGER_MS", "10001", "ingest.linger_ms"),
    ],
)
def test_invalid_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"{field}:" in str(caught.value)


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSENSE_DATABASE_URL", "postgresql://w:hunter2@db:5432/city")
    monkeypatch.setenv("CITYSENSE_MQTT_URL", "mqtts://gw:s3cret@broker:8883")
    settings = load_settings()
    text = repr(settings) + str(settings.masked())
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert settings.masked()["database"]["url"] == "postgresql://w:***@db:5432/city"
    assert settings.mqtt.endpoint() == ("broker", 8883, "gw", "s3cret", True)


def test_mask_url_leaves_urls_without_password() -> None:
    assert mask_url("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"


def test_aggregate_settings_name_the_bad_field() -> None:
    with pytest.raises(SettingsError, match=r"aggregate\.windows\.0: .*size_s 420 must divide"):
        load_settings(aggregate={"windows": [{"name": "7m", "size_s": 420}]})
    with pytest.raises(SettingsError, match=r"daily\.hourly_window '1h' must name a window"):
        load_settings(aggregate={"windows": [{"name": "1m", "size_s": 60}]})
    with pytest.raises(SettingsError, match="window names and sizes must be distinct"):
        load_settings(
            aggregate={"windows": [{"name": "a", "size_s": 60}, {"name": "a", "size_s": 120}]}
        )
    assert [w.name for w in load_settings().aggregate.windows] == ["1m", "15m", "1h"]


def test_every_stage_has_its_own_metrics_port_unless_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CITYSENSE_HTTP_PORT", "CITYSENSE_PUBLISH_PORT", "CITYSENSE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().metrics_ports() == {
        "run": 28080,
        "ingest": 28081,
        "aggregate": 28082,
        "sink": 28083,
        "publish": 28084,
    }
    monkeypatch.setenv("CITYSENSE_HTTP_PORT", "9100")
    shared = Settings().metrics_ports()
    assert {shared[stage] for stage in ("run", "ingest", "aggregate", "sink")} == {9100}
    assert shared["publish"] == 28084  # the API's own port


def test_log_format_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSENSE_LOG_FORMAT", "fancy")
    with pytest.raises(SettingsError, match="log_format"):
        load_settings()


def test_lean_switch_defaults_to_every_fast_path() -> None:
    from citysense.settings import FastPath

    settings = load_settings()
    assert all(settings.fast(path) for path in FastPath)


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("0", set()),
        ("off", set()),
        ("1", {"mqtt-read", "mqtt-publish", "sink-copy"}),
        ("mqtt-read", {"mqtt-read"}),
        (" sink-copy , mqtt-publish ", {"sink-copy", "mqtt-publish"}),
    ],
)
def test_lean_switch_turns_on_the_fast_paths_it_names(
    monkeypatch: pytest.MonkeyPatch, value: str, on: set[str]
) -> None:
    from citysense.settings import FastPath

    monkeypatch.setenv("CITYSENSE_LEAN", value)
    settings = load_settings()
    assert {path.value for path in FastPath if settings.fast(path)} == on


@pytest.mark.parametrize("value", ["2", "mqtt-acks", "kafka-batch", "mqtt-read,nonsense"])
def test_a_bad_lean_switch_fails_at_start_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CITYSENSE_LEAN", value)
    with pytest.raises(SettingsError, match=r"lean: .*mqtt-read, mqtt-publish, sink-copy"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("CITYSENSE_KAFKA_FETCH_MIN_BYTES", "-1", "greater than or equal to 0"),
        ("CITYSENSE_KAFKA_FETCH_MIN_BYTES", "lots", "valid integer"),
        ("CITYSENSE_KAFKA_FETCH_MIN_BYTES", str((64 << 20) + 1), "less than or equal to"),
        ("CITYSENSE_KAFKA_FETCH_MAX_WAIT_MS", "-5", "greater than or equal to 0"),
        ("CITYSENSE_KAFKA_FETCH_MAX_WAIT_MS", "10001", "less than or equal to 10000"),
    ],
)
def test_fetch_settings_are_bounded_and_name_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    field = "kafka." + variable.removeprefix("CITYSENSE_KAFKA_").lower()
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=rf"{re.escape(field)}: [^;]*{reason}"):
        load_settings()


def test_consumers_fetch_with_the_configured_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage's consumer asks the broker to wait for ``fetch_min_bytes`` or
    ``fetch_max_wait_ms`` (not aiokafka's 1 byte / 500 ms); a caller's override still wins."""
    monkeypatch.setenv("CITYSENSE_KAFKA_FETCH_MIN_BYTES", "32768")
    monkeypatch.setenv("CITYSENSE_KAFKA_FETCH_MAX_WAIT_MS", "150")
    kafka = load_settings().kafka
    options = consumer_options(kafka, group_id="g")
    assert (options["fetch_min_bytes"], options["fetch_max_wait_ms"]) == (32768, 150)
    assert options["group_id"] == "g"
    assert options["enable_auto_commit"] is False
    assert consumer_options(kafka, group_id=None, fetch_min_bytes=1)["fetch_min_bytes"] == 1
    defaults = consumer_options(KafkaSettings(), group_id=None)
    assert (defaults["fetch_min_bytes"], defaults["fetch_max_wait_ms"]) == (1, 500)
