"""Simulators: a fleet of sensors publishing over MQTT like real gateways."""
