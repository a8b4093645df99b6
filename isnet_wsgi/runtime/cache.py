"""A small in-memory LRU of encoded results, bounded in bytes.

It holds the response bytes only (never a decoded image), each in a mapping
of its own outside malloc's heap (``OffHeapBytes``); a 1024-px PNG is about
1 MB. Per worker process, like the metrics.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

Value = TypeVar("Value")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The most of the cache one entry may take.
ENTRY_SHARE = 0.5
# Linux: map the pages at once, not one fault at a time.
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class OffHeapBytes:
    """Bytes kept in an anonymous mapping of their own, outside malloc's heap;
    unmapped when the object goes.

    PERF: the worker keeps a heap for requests' buffers (memory.keep_heap),
    and a result's bytes came from it too. Held in the cache, they pinned the
    free heap under them, since glibc gives back only what lies above the last
    allocation. The worker's RSS between requests stayed at the request's
    peak, and its VmHWM climbed from 231.4 MB after the first 1024-px request
    to 246.0 MB after 48; off the heap it ends at 242.0 MB (the cache's own 8
    MB included), and with the cache off it stayed at 231.7 MB. A copy in
    and a copy out cost well under a millisecond a MB; the mapping's pages are
    faulted in by the kernel at once (MAP_POPULATE): 0.39 ms for a 1.4 MB PNG,
    against 0.86 ms page by page.
    """

    def __init__(self, data: bytes):
        self._length = len(data)
        self._mapping = mmap.mmap(-1, max(1, self._length),  # a mapping cannot be empty
                                  flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE)
        self._mapping.write(data)

    def __len__(self) -> int:
        return self._length

    def to_bytes(self) -> bytes:
        return self._mapping[:self._length]


class ResultCache(Generic[Value]):
    """Least-recently-used entries whose ``size_of`` sum stays within max_bytes.

    ``max_bytes`` 0 turns the cache off: nothing is stored, every get misses.
    An entry above the cache's share (ENTRY_SHARE of it) is not stored: a
    full-resolution answer (3-25 MB) would push out every 1024-px one and,
    held, add its bytes to the worker's peak for the sake of one repeat.
    """

    def __init__(self, max_bytes: int, size_of=len):
        self.max_bytes = max_bytes
        self.max_entry_bytes = int(max_bytes * ENTRY_SHARE)
        self._size_of = size_of
        self._entries: OrderedDict[Hashable, tuple[Value, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: Value) -> None:
        size = self._size_of(value)
        if not self.enabled or size > self.max_entry_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted

    def clear(self) -> dict:
        """Empty the cache; what was in it."""
        with self._lock:
            cleared = {"entries": len(self._entries), "bytes": self.bytes}
            self._entries.clear()
            self.bytes = 0
        return cleared

    def stats(self) -> dict:
        return {"enabled": self.enabled, "entries": len(self._entries), "bytes": self.bytes,
                "max_bytes": self.max_bytes, "max_entry_bytes": self.max_entry_bytes,
                "hits": self.hits, "misses": self.misses}
