"""Ingest: MQTT and LoRaWAN listeners → Avro records on Kafka.

Contract: docs/architecture.md#data-flow and #delivery-guarantees.

``IngestService`` is the stage; ``Router`` its pure core (topic → measurement or dead letter).
"""

from ingest._router import Accepted, Incoming, Rejected, Router
from ingest._service import IngestService

__all__ = ["Accepted", "Incoming", "IngestService", "Rejected", "Router"]
