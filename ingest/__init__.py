"""Ingest: MQTT and LoRaWAN listeners → Avro records on Kafka (DESIGN.md sections 2 and 5)."""
