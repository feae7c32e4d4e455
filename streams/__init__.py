"""Streams: event-time windows, watermarks and city indicators.

Contract: docs/architecture.md#windows-and-indicators.

:class:`AggregateService` is the ``citysense aggregate`` stage. The logic it runs is pure and
tested on its own: :class:`WindowStage` (per-sensor windows from measurement columns),
:class:`RollupStage` (per-site and daily windows from per-sensor results),
:class:`GridStage` (mobile sensors' PM2.5 per cell of the European statistical grid),
:class:`Watermarks`, and the indicator formulas in :mod:`streams._indicators`.
"""

from streams._grid_stage import GridStage
from streams._service import AggregateService, AllToOneAssignor
from streams._stage import LateItem, WindowStage
from streams._watermark import Watermarks

__all__ = [
    "AggregateService",
    "AllToOneAssignor",
    "GridStage",
    "LateItem",
    "Watermarks",
    "WindowStage",
]
