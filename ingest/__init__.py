"""Ingest: MQTT and LoRaWAN listeners → decoded, Avro-encoded records on Kafka (DESIGN.md §2, §5)."""
