"""paho's private names are used only with a paho release they were checked against."""

from __future__ import annotations

import logging

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citysense import _paho_private
from citysense.settings import MqttSettings
from simulators import Publisher


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("2.2.0", True),
        ("2.2.7", True),
        ("2.1.0", False),
        ("2.3.0", False),
        ("3.0.0", False),
        ("2.2", False),
        ("unknown", False),
    ],
)
def test_the_version_range_is_exact(version: str, supported: bool) -> None:
    assert _paho_private.supported(version) is supported


def test_the_installed_paho_is_supported() -> None:
    """The fast paths the tests exercise are the ones production runs."""
    assert _paho_private.version_supported(paho.mqtt.__version__)


def test_an_unsupported_paho_is_reported_once_and_turns_the_fast_paths_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(paho.mqtt, "__version__", "2.1.0")
    monkeypatch.setattr(_paho_private, "_checked", None)
    caplog.set_level(logging.WARNING, logger="citysense.paho")
    assert not _paho_private.supported()
    assert not _paho_private.supported()
    warnings = [r for r in caplog.records if r.name == "citysense.paho"]
    assert len(warnings) == 1
    assert "2.1.0" in warnings[0].getMessage()
    assert ">=2.2.0, <2.3.0" in warnings[0].getMessage()


def test_the_publisher_keeps_paho_s_own_puback_handling_when_unsupported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No broker needed: the hook is installed (or not) before connecting."""
    installed: list[mqtt.Client] = []
    monkeypatch.setattr(_paho_private, "install_lean_puback", installed.append)
    monkeypatch.setattr(_paho_private, "_checked", False)
    publisher = Publisher(MqttSettings(url="mqtt://127.0.0.1:1"), "unused")
    with pytest.raises(ConnectionRefusedError):  # nothing listens on port 1
        publisher.__enter__()
    assert installed == []
    assert not publisher._lean


def test_read_hooks_shadow_only_the_one_client() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    other = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    paho_recv = _paho_private.install_read_hooks(client, lambda recv, size: b"", lambda: True)
    assert paho_recv is mqtt.Client._sock_recv
    assert "_sock_recv" in vars(client)
    assert "_handle_publish" in vars(client)
    assert "_sock_recv" not in vars(other)
    assert _paho_private.manual_ack_v5(client)
    assert not _paho_private.manual_ack_v5(other)
    assert not _paho_private.packet_in_progress(client)
