"""Streams: event-time windows, watermarks and indicators (DESIGN.md §6)."""
