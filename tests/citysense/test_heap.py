"""``citysense.heap``: free heap pages go back to the system, in a fresh process each time (the
test process's own heap would say little)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from citysense.settings import Settings

#: Many 100 KiB blocks (under glibc's first mmap threshold, so on the heap), all freed but the
#: last, which pins the top of the heap: free() alone cannot give the rest back.
_FRAGMENTED = """
import json, resource, sys
from citysense.heap import release_free_pages

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

blocks = [bytearray(100 * 1024) for _ in range(2000)]
pin = blocks[-1]
del blocks
before = rss_mib()
released = release_free_pages() if sys.argv[1] == "trim" else None
print(json.dumps({"before": before, "after": rss_mib(), "released": released}))
"""


def _run(mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED, mode], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def test_freed_heap_pages_go_back_only_when_trimmed() -> None:
    kept = _run("keep")
    trimmed = _run("trim")
    # 2,000 freed blocks of 100 KiB: about 195 MiB resident until trimmed.
    assert kept["after"] - kept["before"] > -10, kept
    assert kept["before"] > 150, kept
    assert trimmed["released"] is True
    assert trimmed["before"] - trimmed["after"] > 150, trimmed


def test_the_interval_is_a_setting_that_zero_turns_off() -> None:
    assert Settings().heap_trim_interval_s == 30.0
    assert Settings(heap_trim_interval_s=0).heap_trim_interval_s == 0
    with pytest.raises(ValueError, match="heap_trim_interval_s"):
        Settings(heap_trim_interval_s=-1)
