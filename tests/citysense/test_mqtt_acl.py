"""Mosquitto ACLs from the registry: the text, and a real Mosquitto enforcing it."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from citysense.clients import mqtt_client
from citysense.mqtt_acl import render_acl
from citysense.registry import Registry, Sensor
from citysense.settings import MqttSettings
from citysense.stack import free_port
from citysense.stack._process import spawn, stop_pid, wait_port


def sensor(sid: str, gateway: str | None, transport: str = "direct") -> Sensor:
    return Sensor(
        id=sid,
        kind="noise",
        codec="citysense-json",
        lat=48.85,
        lon=2.39,
        gateway=gateway,
        transport=transport,
        dev_eui=None if transport == "direct" else "70B3D5E75E000005",
    )


REGISTRY = Registry(
    [
        sensor("noise-2", "gw-east"),
        sensor("noise-1", "gw-east"),
        sensor("noise-3", "gw-west"),
        sensor("noise-4", None),
        sensor("noise-5", None, transport="chirpstack"),
    ]
)


def test_acl_text() -> None:
    text = render_acl(REGISTRY, network_servers=["chirpstack"])
    lines = text.splitlines()
    east = lines.index("user gw-east")
    assert lines[east + 1 : east + 3] == [
        "topic write gateways/gw-east/sensors/noise-1/up",
        "topic write gateways/gw-east/sensors/noise-2/up",
    ]
    assert "topic write gateways/gw-west/sensors/noise-3/up" in lines
    assert "pattern write gateways/%u/sensors/noise-4/up" in lines
    assert "noise-5" not in text  # arrives through the network server's envelope topic
    assert "topic read $SYS/broker/store/#" in lines
    assert lines[lines.index("user chirpstack") + 1] == "topic write application/#"
    assert render_acl(REGISTRY) == render_acl(Registry(reversed(list(REGISTRY.sensors.values()))))


@pytest.mark.parametrize("bad", ["gw/east", "gw+", "a b", "x\ny"])
def test_names_that_would_break_the_acl_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be used"):
        render_acl(REGISTRY, ingest_user=bad)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto with the generated ACL and three users (password = name)."""
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = tmp_path / "passwd"
    for n, user in enumerate(("citysense-ingest", "gw-east", "gw-west")):
        flags = ["-c"] if n == 0 else []
        subprocess.run([passwd_tool, *flags, "-b", str(passwd), user, user], check=True)
    (tmp_path / "acl").write_text(render_acl(REGISTRY))
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"acl_file {tmp_path / 'acl'}\nuser {getpass.getuser()}\n"
    )
    log = tmp_path / "mosquitto.log"
    pid = spawn([binary, "-c", str(conf)], log_file=log, pid_file=tmp_path / "pid")
    try:
        wait_port(port, pid, "mosquitto", log)
        yield port
    finally:
        stop_pid(pid)


def connect(user: str, port: int):
    settings = MqttSettings(url=f"mqtt://{user}:{user}@127.0.0.1:{port}")
    client, host, port = mqtt_client(settings, f"{user}-test")
    client.connect(host, port)
    client.loop_start()
    return client


def test_mosquitto_enforces_the_generated_acl(broker: int) -> None:
    received: list[str] = []
    subscribed = threading.Event()
    ingest = connect("citysense-ingest", broker)
    ingest.on_message = lambda _c, _u, msg: received.append(msg.topic)
    ingest.on_subscribe = lambda *_a: subscribed.set()
    ingest.subscribe("gateways/#", qos=1)
    try:
        assert subscribed.wait(10)
        east = connect("gw-east", broker)
        attempts = [
            "gateways/gw-east/sensors/noise-1/up",  # its own sensor: allowed
            "gateways/gw-east/sensors/noise-3/up",  # gw-west's sensor: refused
            "gateways/gw-west/sensors/noise-3/up",  # under another gateway's name: refused
            "gateways/gw-east/sensors/noise-4/up",  # unbound sensor, own name: allowed
            "gateways/gw-east/sensors/unknown/up",  # not in the registry: refused
        ]
        for topic in attempts:
            east.publish(topic, b"1", qos=1).wait_for_publish(10)
        # A marker the ingest user is allowed to see last: everything before it has arrived.
        west = connect("gw-west", broker)
        west.publish("gateways/gw-west/sensors/noise-3/up", b"end", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while "gateways/gw-west/sensors/noise-3/up" not in received and time.monotonic() < deadline:
            time.sleep(0.05)
        for client in (east, west):
            client.disconnect()
            client.loop_stop()
    finally:
        ingest.disconnect()
        ingest.loop_stop()
    assert received == [
        "gateways/gw-east/sensors/noise-1/up",
        "gateways/gw-east/sensors/noise-4/up",
        "gateways/gw-west/sensors/noise-3/up",
    ]
