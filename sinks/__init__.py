"""Sinks: TimescaleDB (exactly-once rows) and open-data publication (DESIGN.md §7, §8)."""
