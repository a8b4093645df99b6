"""RSS from /proc and glibc's malloc knobs."""

import os
import subprocess
import sys

from isnet_wsgi.runtime import memory
from tests.helpers import reset_peak_rss, small_page_child


def test_rss_and_peak_are_read_from_proc():
    rss, peak = memory.rss_mb(), memory.peak_rss_mb()
    assert 5 < rss <= peak < 100_000
    assert memory.rss_mb(os.getpid()) > 5


def test_peak_grows_with_touched_memory_and_can_be_reset():
    reset_peak_rss()
    before = memory.peak_rss_mb()
    block = bytearray(64 * 1024 * 1024)  # zero-filled: every page is touched
    assert memory.peak_rss_mb() >= before + 60
    del block
    memory.trim()
    reset_peak_rss()
    assert memory.peak_rss_mb() < before + 60


def test_trim_gives_freed_heap_pages_back():
    # 4 KiB blocks come from malloc's heap (below the mmap threshold); one in
    # 64 kept alive leaves the rest as holes that free() alone cannot return.
    blocks = [bytes(4096) for _ in range(20_000)]
    kept = blocks[::64]
    del blocks
    before_mb = memory.rss_mb()
    assert memory.trim()
    assert memory.rss_mb() < before_mb - 40
    assert len(kept) == 313


def test_the_mmap_threshold_is_set_on_glibc():
    assert memory.set_mmap_threshold(64 * 1024)
    assert not memory.set_mmap_threshold(0)


# A child that allocates and frees the same 4 MiB buffers ten times with the
# service's 64 KiB mmap threshold, optionally keeping a heap of the given MiB
# first, and prints the page faults of the last nine rounds.
_REUSE_CHILD = """
import resource, sys
from isnet_wsgi.runtime import memory
memory.set_mmap_threshold(64 * 1024)
mode, buffers = sys.argv[1], int(sys.argv[2])
if mode != "fresh":
    assert memory.keep_heap(int(mode) << 20)
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [bytearray(4 << 20) for _ in range(buffers)]  # zero-filled: every page is touched
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _reuse_faults(mode: str, buffers: int = 1) -> int:
    return int(small_page_child(_REUSE_CHILD, mode, str(buffers)))


def test_a_kept_heap_serves_the_same_buffer_again_without_page_faults():
    # Mapped afresh, each round faults in all 1024 pages of the buffer.
    assert _reuse_faults("fresh") >= 9 * 1000
    assert _reuse_faults("16") < 9 * 50
    assert not memory.keep_heap(0)


def test_a_request_past_the_kept_size_faults_in_only_what_is_past_it():
    # 12 MiB live against an 8 MiB heap: glibc trims the free top once it
    # passes 8 MiB, and must keep those 8, not give back all 12.
    past_it = 9 * (4 << 20) // 4096  # 4 MiB of pages a round
    assert _reuse_faults("8", buffers=3) < past_it + 9 * 100
    assert _reuse_faults("fresh", buffers=3) >= 3 * past_it


# A child whose six threads each allocate while all are alive, optionally
# after limit_arenas(2); glibc's malloc_stats() then lists one "Arena N:" per heap.
_ARENAS_CHILD = """
import ctypes, sys, threading
from isnet_wsgi.runtime import memory
if sys.argv[1] == "limit":
    assert memory.limit_arenas(2)
together = threading.Barrier(7)
def allocate():
    held = bytearray(64 * 1024)  # from the thread's arena: below the mmap threshold
    together.wait()
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(6)]
for thread in threads:
    thread.start()
together.wait()
ctypes.CDLL("libc.so.6").malloc_stats()
together.wait()
for thread in threads:
    thread.join()
"""


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _ARENAS_CHILD, mode], capture_output=True,
                          text=True, timeout=60, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_threads_share_two_heaps_once_the_arenas_are_limited():
    assert _arenas("free") >= 4  # glibc's default: a heap for most threads
    assert _arenas("limit") == 2
    assert not memory.limit_arenas(0)
