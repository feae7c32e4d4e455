"""The embedded service stack (``citysense stack up|down|status|env``)."""

import contextlib
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

from citysense.settings import StackSettings
from citysense.stack._process import StackError, free_port, port_open
from citysense.stack._prometheus import prometheus_config
from citysense.stack._services import (
    SERVICE_NAMES,
    SYSTEM_STATE_DIR,
    ServiceStatus,
    Stack,
    system_postgres_dir,
)

__all__ = [
    "SERVICE_NAMES",
    "SYSTEM_STATE_DIR",
    "ServiceStatus",
    "Stack",
    "StackError",
    "default_stack",
    "free_port",
    "port_open",
    "prometheus_config",
    "system_postgres_dir",
    "temporary_stack",
]


def default_stack(stack: StackSettings, metrics_ports: dict[str, int]) -> Stack:
    """The project's stack in ``CITYSENSE_STACK_DIR`` (default ``./.stack``) on its ports;
    Prometheus scrapes ``metrics_ports`` (``Settings.metrics_ports()``)."""
    return Stack(
        root=stack.dir.resolve(),
        mqtt_port=stack.mqtt_port,
        kafka_port=stack.kafka_port,
        postgres_port=stack.postgres_port,
        prometheus_port=stack.prometheus_port,
        mqtt_max_queued_messages=stack.mqtt_max_queued_messages,
        metrics_ports=metrics_ports,
    )


@contextlib.contextmanager
def temporary_stack(
    prefix: str = "citysense-", only: Collection[str] | None = None
) -> Iterator[Stack]:
    """A stack on free loopback ports in a fresh temporary directory, removed afterwards.

    For tests and benchmarks. The directory is world-traversable so that, as root, PostgreSQL
    (which then runs as the ``postgres`` user) keeps its data inside it too.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    stack = Stack(
        root=root,
        mqtt_port=free_port(),
        kafka_port=free_port(),
        postgres_port=free_port(),
        prometheus_port=free_port(),
        # Free ports, nothing listening: Prometheus has a (down) target per stage.
        metrics_ports={
            stage: free_port() for stage in ("run", "ingest", "aggregate", "sink", "publish")
        },
    )
    try:
        stack.up(only=only)
        yield stack
    finally:
        stack.purge()
