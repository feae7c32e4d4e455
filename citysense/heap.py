"""Giving the C heap's free pages back to the system now and then (glibc's ``malloc_trim``).

Why: a stage's resident memory grew for as long as it ran while what it had allocated did not.
The aggregator's window state held at 8-11 MiB and Python's traced memory at about 44 MiB while
its RSS rose by several MiB a minute (docs/operations.md, "Memory"). numpy's column arrays of each
polled batch are large and short-lived; after the first ones are freed, glibc raises its dynamic
mmap threshold and serves the next ones from the heap, where freed chunks between live ones stay
resident: glibc only gives memory back from the top of the heap on its own.

``malloc_trim(0)`` gives back every whole free page of every arena, not only the top (glibc 2.8
and later; malloc_trim(3)). It walks the free chunks, which takes a few milliseconds on a heap of
a few hundred MiB, so the stages call it every ``heap_trim_interval_s`` (30 s by default, ``0``
turns it off), never per record. On a C library without it (musl) nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from functools import cache

__all__ = ["release_free_pages", "trim_every"]

log = logging.getLogger("citysense.heap")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_pages() -> bool | None:
    """Give the heap's whole free pages back to the system: True if some were, False if none
    were, None where the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is None:
        return None
    return bool(trim(0))


async def trim_every(interval_s: float) -> None:
    """:func:`release_free_pages` every ``interval_s`` seconds until cancelled."""
    if _malloc_trim() is None:
        log.info("no malloc_trim in this C library; free heap pages stay with the process")
        return
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        released = release_free_pages()
        took_ms = round((time.perf_counter() - started) * 1e3, 2)
        log.debug("heap trimmed", extra={"released": released, "took_ms": took_ms})
