"""Sinks: TimescaleDB (exactly-once rows) and open-data publication.

Contract: docs/architecture.md#storage and #publication.
"""
