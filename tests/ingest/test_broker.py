"""Mosquitto's $SYS store counters become ingest gauges."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ingest._broker import observe_sys_message


def test_store_count_and_bytes_are_read() -> None:
    assert observe_sys_message("$SYS/broker/store/messages/count", b"12345")
    assert observe_sys_message("$SYS/broker/store/messages/bytes", b" 987654\n")
    assert REGISTRY.get_sample_value("citysense_ingest_broker_stored_messages") == 12345
    assert REGISTRY.get_sample_value("citysense_ingest_broker_stored_bytes") == 987654


def test_other_topics_and_bad_payloads_are_ignored() -> None:
    observe_sys_message("$SYS/broker/store/messages/count", b"7")
    assert not observe_sys_message("$SYS/broker/uptime", b"10 seconds")
    assert not observe_sys_message("$SYS/broker/store/messages/count", b"many")
    assert not observe_sys_message("$SYS/broker/store/messages/count", b"\xff")
    assert REGISTRY.get_sample_value("citysense_ingest_broker_stored_messages") == 7
