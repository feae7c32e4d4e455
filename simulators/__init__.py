"""Simulators: a fleet of sensors publishing over MQTT like real gateways.

``run_simulation(SimulationSpec(...))`` publishes a registry's sensors (the ``nation`` scenario
by default) as raw payloads and ChirpStack / The Things Stack envelopes, with daily patterns,
malformed and late messages on demand, and returns a summary of what the broker acknowledged.
"""

from simulators._fleet import DIRECT_TOPIC, GATEWAY_TOPIC, Fleet, FleetStats, direct_topic
from simulators._publisher import Outgoing, Publisher, PublishError
from simulators._run import SimulationSpec, run_simulation

__all__ = [
    "DIRECT_TOPIC",
    "GATEWAY_TOPIC",
    "Fleet",
    "FleetStats",
    "Outgoing",
    "PublishError",
    "Publisher",
    "SimulationSpec",
    "direct_topic",
    "run_simulation",
]
