"""Mosquitto ACLs generated from the sensor registry (issue 14 item 6, ``citysense mqtt acl``).

Production Mosquitto runs with one user per gateway. The ACL file (mosquitto.conf(5),
"acl_file": ``user <name>`` then ``topic [read|write|readwrite] <topic>`` lines apply to that user;
``pattern`` lines apply to every user with ``%u`` replaced by the username) gives each gateway
exactly the uplink topics of the sensors the registry binds to it, so a stolen gateway password
cannot inject data for another gateway's sensors. Sensors bound to no gateway may arrive through
any gateway, under that gateway's own name (ingest checks the same binding; see
``ingest/_router.py``).

The result is deterministic (sorted), so a changed registry gives a reviewable diff.
"""

from __future__ import annotations

from collections.abc import Iterable

from citysense.registry import Registry

__all__ = ["render_acl"]

_MQTT_WILDCARDS = frozenset("+#")


def _check_name(kind: str, value: str) -> str:
    """Topic segments and usernames must not carry MQTT wildcards, separators or newlines."""
    if not value or any(c in _MQTT_WILDCARDS or c in "/\n\r\0 " for c in value):
        raise ValueError(f"{kind} {value!r} cannot be used in an MQTT ACL")
    return value


def render_acl(
    registry: Registry,
    *,
    ingest_user: str = "citysense-ingest",
    network_servers: Iterable[str] = (),
) -> str:
    """The ACL file's text for ``registry``.

    ``ingest_user`` reads every uplink family and Mosquitto's store counters (queue-depth
    metric); each of ``network_servers`` (ChirpStack, The Things Stack integrations) may write
    the LoRaWAN envelope topics; each gateway named by a sensor may write that sensor's topic.
    """
    ingest = _check_name("user", ingest_user)
    lines = [
        "# Generated from the sensor registry by `citysense mqtt acl`; edits are overwritten.",
        "",
        "# The pipeline's ingest user reads every uplink and the broker's store counters.",
        f"user {ingest}",
        "topic read sensors/#",
        "topic read gateways/#",
        "topic read application/#",
        "topic read v3/#",
        "topic read $SYS/broker/store/#",
    ]
    for server in sorted(set(network_servers)):
        lines += [
            "",
            "# A LoRaWAN network server's MQTT integration.",
            f"user {_check_name('user', server)}",
            "topic write application/#",
            "topic write v3/#",
        ]
    by_gateway: dict[str, list[str]] = {}
    unbound: list[str] = []
    for sensor in registry.sensors.values():
        if sensor.transport != "direct":
            continue  # arrives through a network server's envelope topic
        sensor_id = _check_name("sensor id", sensor.id)
        if sensor.gateway is None:
            unbound.append(sensor_id)
        else:
            by_gateway.setdefault(_check_name("gateway", sensor.gateway), []).append(sensor_id)
    for gateway in sorted(by_gateway):
        lines += ["", f"user {gateway}"]
        lines += [
            f"topic write gateways/{gateway}/sensors/{s}/up" for s in sorted(by_gateway[gateway])
        ]
    if unbound:
        lines += ["", "# Sensors bound to no gateway: any gateway, under its own name."]
        lines += [f"pattern write gateways/%u/sensors/{s}/up" for s in sorted(unbound)]
    return "\n".join(lines) + "\n"
