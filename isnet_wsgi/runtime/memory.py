"""Resident memory read from /proc, and glibc's malloc knobs through ctypes.

Linux only, like the service. Where a knob is missing (musl, macOS) the
functions do nothing and say so by returning False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# mallopt() parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_libc = _load_libc()


def _status_kb(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size now, in MiB."""
    with open(f"/proc/{pid}/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return round(resident_pages * _PAGE_KB / 1024, 1)


def peak_rss_mb(pid: int | str = "self") -> float:
    """The high-water mark of the resident set (VmHWM), in MiB."""
    return round(_status_kb("VmHWM", pid) / 1024, 1)


def set_mmap_threshold(threshold_bytes: int) -> bool:
    """Serve allocations above this size from mmap, so free() unmaps them.

    PERF: onnxruntime allocates and frees ~MB-sized activation buffers on every
    run; glibc's default dynamic threshold moves them into the heap, where
    fragmentation keeps the peak resident. A 64 KiB threshold costs page faults
    (latency) and saves ~150-250 MB of peak RSS.
    """
    if _libc is None or threshold_bytes <= 0:
        return False
    return bool(_libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))


def limit_arenas(count: int) -> bool:
    """Let glibc make at most this many heaps ("arenas"), the main one included.

    PERF: by default every thread that allocates may get an arena of its
    own, and each keeps its freed memory as the main heap does (keep_heap).
    The worker's helper threads and onnxruntime's pool thread each had one:
    with 2, the worker's VmHWM after 32 requests was 246.2 MB against 252.3
    MB at the same median latency (bench.ab, 8 rounds; with
    MALLOC_ARENA_MAX=2 in an earlier run, 245.3 against 254.6 MB). Call it
    before those threads first allocate: arenas already made stay.
    """
    if _libc is None or count <= 0:
        return False
    return bool(_libc.mallopt(_M_ARENA_MAX, int(count)))


def keep_heap(size_bytes: int) -> bool:
    """From now on, serve allocations below this size from the heap, and keep
    this much of it free rather than give it back to the kernel.

    PERF: a request allocates and frees the same ~MB-sized buffers each
    time; from a kept heap they are pages already resident, not fresh
    mmaps that fault in page by page. Called once the session is made, so
    what its creation freed is trimmed first, not kept.
    """
    if _libc is None or size_bytes <= 0:
        return False
    trim()
    # PERF: the top pad too. Past the trim threshold glibc gives back all the
    # free top of the heap but the pad (128 KiB by default), not just the
    # excess. A 1024-px request grew the heap ~20 MB, so with the threshold
    # alone it was all given back after each one and faulted in afresh the
    # next time, in transparent huge pages: 11 faults (22 MB) a request, 4
    # with the pad (CACHE_MB=0). On a VM whose balloon takes back free
    # memory, such a fresh page cost ms: in-process after 1.2 s idle the
    # model input took 54-55 ms against 20-27 with the pad, and the own work
    # of a request 104 -> 77 ms (back to back 73 -> 63; medians of 3 processes).
    return (set_mmap_threshold(size_bytes)
            and bool(_libc.mallopt(_M_TRIM_THRESHOLD, int(size_bytes)))
            and bool(_libc.mallopt(_M_TOP_PAD, int(size_bytes))))


def trim() -> bool:
    """Give free heap memory back to the kernel (glibc's malloc_trim)."""
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))
