"""Ingest metrics (docs/architecture.md#observability): base units, no per-sensor label."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["METRICS"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class _IngestMetrics:
    received: Counter
    decoded: Counter
    dead_letters: Counter
    duplicates: Counter
    produced: Counter
    inflight: Gauge
    produce_latency: Histogram
    ingest_latency: Histogram
    decode_seconds: Histogram
    mqtt_reconnects: Counter
    kafka_retries: Counter
    mqtt_connected: Gauge


METRICS = _IngestMetrics(
    received=Counter(
        "citysense_ingest_received_messages_total", "MQTT messages received", ["family"]
    ),
    decoded=Counter(
        "citysense_ingest_decoded_messages_total", "Messages decoded into measurements", ["kind"]
    ),
    dead_letters=Counter(
        "citysense_ingest_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"]
    ),
    duplicates=Counter(
        "citysense_ingest_duplicates_total", "LoRaWAN uplinks recognised as duplicates"
    ),
    produced=Counter(
        "citysense_ingest_produced_records_total", "Records acknowledged by Kafka", ["topic"]
    ),
    inflight=Gauge(
        "citysense_ingest_inflight_messages", "MQTT messages received, not yet acknowledged"
    ),
    produce_latency=Histogram(
        "citysense_ingest_kafka_produce_seconds",
        "Time from sending a batch to Kafka's acknowledgement",
        buckets=_LATENCY_BUCKETS,
    ),
    ingest_latency=Histogram(
        "citysense_ingest_latency_seconds",
        "Time from MQTT receive to Kafka acknowledgement (sampled)",
        buckets=_LATENCY_BUCKETS,
    ),
    decode_seconds=Histogram(
        "citysense_ingest_decode_seconds",
        "Route + decode + Avro encode time per message (sampled)",
        buckets=(1e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2),
    ),
    mqtt_reconnects=Counter("citysense_ingest_mqtt_reconnects_total", "MQTT reconnections"),
    kafka_retries=Counter("citysense_ingest_kafka_retries_total", "Failed Kafka sends retried"),
    mqtt_connected=Gauge("citysense_ingest_mqtt_connected", "MQTT connections up"),
)
