"""Settings of the TimescaleDB sink: the ``[sink]`` section (``CITYSENSE_SINK_*``).

Defined with the other sections in :mod:`citysense.settings` (so ``Settings`` can hold it without
an import cycle) and re-exported here for the sink's modules.
"""

from citysense.settings import DEFAULT_SINK_TOPICS as DEFAULT_TOPICS
from citysense.settings import SinkSettings

__all__ = ["DEFAULT_TOPICS", "SinkSettings"]
