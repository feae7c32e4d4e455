"""The embedded service stack (``citysense stack up|down|status|env``)."""

from citysense.settings import HttpSettings, StackSettings
from citysense.stack._process import StackError, free_port, port_open
from citysense.stack._services import SERVICE_NAMES, ServiceStatus, Stack

__all__ = [
    "SERVICE_NAMES",
    "ServiceStatus",
    "Stack",
    "StackError",
    "default_stack",
    "free_port",
    "port_open",
]


def default_stack(stack: StackSettings, http: HttpSettings) -> Stack:
    """The project's stack in ``CITYSENSE_STACK_DIR`` (default ``./.stack``) on its ports."""
    return Stack(
        root=stack.dir.resolve(),
        mqtt_port=stack.mqtt_port,
        kafka_port=stack.kafka_port,
        postgres_port=stack.postgres_port,
        prometheus_port=stack.prometheus_port,
        metrics_port=http.port,
        mqtt_max_queued_messages=stack.mqtt_max_queued_messages,
    )
