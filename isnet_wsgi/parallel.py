"""A few pieces of C work at once, one per core, from the request's thread.

zlib, Pillow and numpy release the GIL while they work, so plain threads run
them on separate cores; the worker's cores are idle outside onnxruntime's run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_in_threads(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``function`` of each item, in order: the first on this thread, each other on its own."""
    if len(items) == 1:
        return [function(items[0])]
    # NOTE: threads made per call, not a pool kept per module: a pool made in
    # the gunicorn master (preload) would not survive the fork.
    with ThreadPoolExecutor(len(items) - 1) as pool:
        others = [pool.submit(function, item) for item in items[1:]]
        return [function(items[0]), *(future.result() for future in others)]
