"""Memory of other processes, read from /proc: peaks, process trees, a sampler.

VmHWM is exact for one process; a tree (gunicorn master + worker, or a
server that forks) has no kernel high-water mark, so `TreeSampler` polls the
tree's summed RSS and keeps the largest value it saw.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bench.harness import children
from isnet_wsgi.runtime import memory


def _rss_mb(pid: int) -> float:
    """memory.rss_mb, or 0 for a process that is gone (a tree changes as it is read)."""
    try:
        return memory.rss_mb(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += children(current)
    return pids


def tree_rss_mb(pid: int) -> float:
    return round(sum(_rss_mb(member) for member in tree(pid)), 1)


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages divided among their sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def tree_pss_mb(pid: int) -> float:
    """What the tree costs in memory, each page counted once (a container's view)."""
    return round(sum(pss_mb(member) for member in tree(pid)), 1)


class TreeSampler:
    """Polls a process tree's summed RSS in a thread and keeps the peak.

    NOTE: a sum of RSS counts pages shared between master and worker twice,
    which is what a container's memory limit does not do; it is the figure
    `ps`/`top` users add up, and an upper bound on the tree's footprint.
    """

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.peak_pss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self.peak_pss_mb = max(self.peak_pss_mb, tree_pss_mb(self.pid))
            time.sleep(self.interval_s)


def du_mb(path: Path) -> float:
    """Bytes on disk under path (files only, links not followed), in MiB."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return round(total / 2**20, 1)
