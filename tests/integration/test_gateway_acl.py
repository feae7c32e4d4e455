"""The broker's ACL: a gateway may publish only under gateways/<its own name>/."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from citysense.clients import mqtt_client
from citysense.settings import MqttSettings, Settings
from citysense.stack import Stack

pytestmark = pytest.mark.integration


def test_gateway_can_publish_only_under_its_own_name(stack: Stack, settings: Settings) -> None:
    gateway = f"gw-{uuid.uuid4().hex[:6]}"
    stack.add_mqtt_user(gateway, "gateway-secret")
    time.sleep(0.5)  # the broker reloads its password and ACL files on SIGHUP
    received: list[str] = []
    subscribed = threading.Event()
    watcher, host, port = mqtt_client(settings.mqtt, f"watch-{uuid.uuid4().hex[:6]}")
    watcher.on_connect = lambda c, *_a: c.subscribe("gateways/#", qos=1)
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.on_message = lambda _c, _u, msg: received.append(msg.topic)
    watcher.connect(host, port)
    watcher.loop_start()
    try:
        assert subscribed.wait(10)
        gateway_settings = MqttSettings(url=f"mqtt://{gateway}:gateway-secret@{host}:{port}")
        client, host, port = mqtt_client(gateway_settings, gateway)
        client.connect(host, port)
        client.loop_start()
        own = client.publish(f"gateways/{gateway}/sensors/a/up", b"1", qos=1)
        other = client.publish("gateways/gw-someone-else/sensors/b/up", b"2", qos=1)
        plain = client.publish("sensors/b/up", b"3", qos=1)
        for info in (own, other, plain):
            info.wait_for_publish(10)
        time.sleep(0.5)
        client.disconnect()
        client.loop_stop()
    finally:
        watcher.disconnect()
        watcher.loop_stop()
    assert received == [f"gateways/{gateway}/sensors/a/up"]
