"""A few pieces of C work at once, one per core, from the request's thread.

zlib, Pillow and numpy release the GIL while they work, so plain threads run
them on separate cores; the worker's cores are idle outside onnxruntime's run.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Helper threads a process may have; each is started on first need. More
# than the cores, so a helper's own call here never waits for a free one.
_MAX_HELPERS = 8
_helpers: ThreadPoolExecutor | None = None


def submit(function: Callable[..., Result], *args) -> Future:
    """``function(*args)`` on one of this process's helper threads.

    PERF: the helpers outlive the call: a two-item map_in_threads took 157
    us with a pool made per call, 37 us with them (medians of 200, idle
    machine), and a 1024-px request makes five such calls and a PNG decode.
    """
    global _helpers
    if _helpers is None:
        _helpers = ThreadPoolExecutor(_MAX_HELPERS, thread_name_prefix="isnet-helper")
    return _helpers.submit(function, *args)


def map_in_threads(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``function`` of each item, in order: the first on this thread, each other on a helper."""
    if len(items) == 1:
        return [function(items[0])]
    others = [submit(function, item) for item in items[1:]]
    try:
        first = function(items[0])
    finally:
        wait(others)  # none still at work on what the caller may drop
    return [first, *(future.result() for future in others)]


def _forget_helpers() -> None:
    # NOTE: a fork copies the pool but not its threads (the gunicorn master,
    # preload_app): the child starts its own on first need.
    global _helpers
    _helpers = None


os.register_at_fork(after_in_child=_forget_helpers)
