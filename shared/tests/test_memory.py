"""`release_freed_memory` gives freed heap pages back to the operating system (glibc), at most
once per interval; `collector_paused` pauses the cyclic garbage collector around a batch."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from cxkit import memory

needs_trim = pytest.mark.skipif(not memory.can_release(), reason="needs glibc's malloc_trim")

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


@needs_trim
def test_a_freed_burst_is_given_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, check=True, timeout=60).stdout
    before, after, trimmed = out.split()
    assert trimmed == "True"
    assert float(before) - float(after) > 100, out  # about 200 MB were freed by the burst


@needs_trim
def test_it_trims_at_most_once_per_interval() -> None:
    memory.release_freed_memory(interval_s=0)
    assert memory.release_freed_memory(interval_s=3600) is False
    assert memory.release_freed_memory(interval_s=0) is True


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.usefixtures("collector_on")
def test_the_collector_is_paused_by_the_first_to_enter_and_resumed_by_the_last_to_leave() -> None:
    with memory.collector_paused():
        assert not gc.isenabled()
        with memory.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    with pytest.raises(RuntimeError), memory.collector_paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()
    gc.disable()  # switched off by someone else: left off
    with memory.collector_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_on")
async def test_pauses_of_tasks_that_overlap_resume_the_collector_when_the_last_ends() -> None:
    first_in, second_in, first_may_leave = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[bool] = []

    async def first() -> None:
        with memory.collector_paused():
            first_in.set()
            await first_may_leave.wait()
        seen.append(gc.isenabled())  # the second is still inside

    async def second() -> None:
        await first_in.wait()
        with memory.collector_paused():
            second_in.set()
            first_may_leave.set()
            await asyncio.sleep(0.01)
        seen.append(gc.isenabled())

    await asyncio.gather(first(), second())
    assert seen == [False, True]
