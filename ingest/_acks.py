"""PUBACKs in arrival order, released by Kafka's acknowledgements (MQTT 3.1.1 section 4.6).

Every QoS 1 message gets a :class:`Release`, the callable its Kafka record carries: calling it
marks the message's slot, and the head of released slots is acknowledged with paho's public
``ack``. (Writing a run of PUBACKs as one packet through paho's private ``_packet_queue`` was
measured with ``make bench`` and gained ingest under 15 %: removed, docs/runtime.md#fast-paths.)
The slot is its own release callback (``__call__``), so a message costs one object and no closure;
compiled with mypyc (``deploy/scripts/build_native.py``), the ``.py`` being the fallback.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["AckQueue", "Release"]


class Release:
    """One message's place in the PUBACK order; calling it releases the PUBACK."""

    __slots__ = ("done", "generation", "mid", "queue")

    def __init__(self, queue: AckQueue, mid: int, generation: int) -> None:
        self.queue = queue
        self.mid = mid
        self.generation = generation
        self.done = False

    def __call__(self) -> None:
        queue = self.queue
        if self.generation != queue.generation:
            return  # acknowledged on a connection that is gone; the broker redelivers
        self.done = True
        # Releases come in runs (a Kafka batch's records): one flush after the run.
        if not queue.flush_scheduled:
            queue.flush_scheduled = True
            asyncio.get_running_loop().call_soon(queue.flush)


class AckQueue:
    """PUBACKs in arrival order: a release marks its slot, the head of done slots is sent."""

    __slots__ = ("client", "flush_scheduled", "generation", "on_flushed", "slots")

    def __init__(self, on_flushed: Callable[[], None]) -> None:
        #: The paho client (``Any``: the compiled module does not import paho).
        self.client: Any = None
        self.slots: deque[Release] = deque()
        self.on_flushed = on_flushed
        self.flush_scheduled = False
        self.generation = 0

    def reset(self, client: Any) -> None:
        """A new connection: unacknowledged messages will be redelivered, forget them."""
        self.client = client
        self.slots.clear()
        self.generation += 1

    def track(self, mid: int) -> Release:
        """The release of a message just received, queued behind those received before it."""
        release = Release(self, mid, self.generation)
        self.slots.append(release)
        return release

    def track_all(self, mids: list[int]) -> list[Release]:
        """:meth:`track` for each of ``mids``, in order."""
        generation = self.generation
        releases = [Release(self, mid, generation) for mid in mids]
        self.slots.extend(releases)
        return releases

    def flush(self) -> None:
        """Send the PUBACKs of the released head of the queue, in arrival order."""
        self.flush_scheduled = False
        slots, client = self.slots, self.client
        mids: list[int] = []
        while slots and slots[0].done:
            mids.append(slots.popleft().mid)
        if client is not None:
            for mid in mids:
                client.ack(mid, 1)
        self.on_flushed()

    def __len__(self) -> int:
        return len(self.slots)
