"""Streams: event-time windows, watermarks and city indicators.

Contract: docs/architecture.md#windows-and-indicators.

:class:`AggregateService` is the ``citysense aggregate`` stage. The logic it runs is pure and
tested on its own: :class:`WindowStage` (per-sensor windows from measurement columns),
:class:`RollupStage` (per-site and daily windows from per-sensor results),
:class:`Watermarks`, and the indicator formulas in :mod:`streams._indicators`.
"""

from streams._service import AggregateService, AllToOneAssignor
from streams._stage import LateItem, WindowStage
from streams._watermark import Watermarks

__all__ = ["AggregateService", "AllToOneAssignor", "LateItem", "Watermarks", "WindowStage"]
