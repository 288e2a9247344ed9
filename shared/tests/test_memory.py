"""`release_freed_memory` gives freed heap pages back to the operating system (glibc), at most
once per interval."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cxkit import memory

pytestmark = pytest.mark.skipif(not memory.can_release(), reason="needs glibc's malloc_trim")

# A burst as a consumer poll makes it: many buffers too big for Python's small-object allocator
# (so glibc's heap holds them), freed again, with a few small survivors among them so the heap
# cannot shrink from the top by itself.
BURST = textwrap.dedent(
    """
    import gc
    from cxkit.memory import release_freed_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    keep, burst = [], []
    for i in range(200_000):
        burst.append(bytearray(1_000))
        if i % 1_000 == 0:
            keep.append(bytearray(1_000))
    del burst
    gc.collect()
    before = rss_mb()
    trimmed = release_freed_memory(interval_s=0)
    print(before, rss_mb(), trimmed)
    """
)


def test_a_freed_burst_is_given_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, check=True, timeout=60).stdout
    before, after, trimmed = out.split()
    assert trimmed == "True"
    assert float(before) - float(after) > 100, out  # about 200 MB were freed by the burst


def test_it_trims_at_most_once_per_interval() -> None:
    memory.release_freed_memory(interval_s=0)
    assert memory.release_freed_memory(interval_s=3600) is False
    assert memory.release_freed_memory(interval_s=0) is True
