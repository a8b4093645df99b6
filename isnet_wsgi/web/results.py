"""The result cache's policy, and how a result is answered as a download.

An identical upload with identical options gets the bytes made the first
time (CACHE_MB; off at 0). The cache and its metrics are made here, once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Hashable

from ..options import cache_key_part
from ..pipeline import Output
from ..runtime.cache import OffHeapBytes, ResultCache, digest
from ..runtime.metrics import CounterView, Gauge, Registry
from .http import attachment_header
from .response import Response, StreamedBody


@dataclass(frozen=True)
class _CachedOutput:
    """An Output as the result cache holds it: its bytes off malloc's heap."""

    body: OffHeapBytes
    output: Output  # with an empty body: the rest of the Output as it was

    @classmethod
    def of(cls, output: Output) -> "_CachedOutput":
        return cls(OffHeapBytes(output.body), dataclasses.replace(output, body=b""))

    def to_output(self) -> Output:
        return dataclasses.replace(self.output, body=self.body.to_bytes())


class Results:
    """Makes results, or finds them in the cache when that can pay off."""

    def __init__(self, max_bytes: int, registry: Registry):
        self.cache: ResultCache[_CachedOutput] = ResultCache(
            max_bytes, size_of=lambda cached: len(cached.body))
        registry.add(CounterView(
            "isnet_cache_requests_total", "Result cache lookups, by result (hit, miss).",
            ("result",), lambda: {("hit",): self.cache.hits, ("miss",): self.cache.misses}))
        registry.add(Gauge("isnet_cache_bytes", "Bytes of results in the cache.",
                           lambda: self.cache.bytes))

    def get_or_make(self, endpoint: str, uploads: tuple[bytes | None, ...], options,
                    make: Callable[[], Output]) -> tuple[Output, bool | None]:
        """The output and whether it came from the cache (None: the cache is off)."""
        if not self.cache.enabled:
            return make(), None
        # PERF: hashing the upload (up to MAX_UPLOAD_MB) only when it can pay off.
        key: Hashable = (endpoint, *(digest(data) if data else "" for data in uploads),
                         cache_key_part(options))
        cached = self.cache.get(key)
        if cached is not None:
            return cached.to_output(), True
        output = make()
        if output.stream is None:  # NOTE: a streamed answer is never all in memory to keep
            self.cache.put(key, _CachedOutput.of(output))
        return output, False


def size_headers(output: Output) -> list[tuple[str, str]]:
    """X-Width, X-Height and the subject's X-Foreground-* box, as remove.bg names them."""
    headers = []
    if output.size is not None:
        headers += [("X-Width", str(output.size[0])), ("X-Height", str(output.size[1]))]
    headers += [(f"X-Foreground-{side.title()}", str(value))
                for side, value in foreground_sides(output).items()]
    return headers


def foreground_sides(output: Output) -> dict[str, int]:
    """The subject's box by remove.bg's names for its sides (top, left, width,
    height, in its order); empty when no subject was found."""
    if output.foreground is None:
        return {}
    left, top, width, height = output.foreground
    return {"top": top, "left": left, "width": width, "height": height}


def download(output: Output, input_name: str, cache_hit: bool | None) -> Response:
    """The output as a file download named after the input, with its size headers."""
    headers = [("Content-Disposition", attachment_header(output.file_name(input_name))),
               *size_headers(output)]
    if cache_hit is not None:
        headers.append(("X-Cache", "hit" if cache_hit else "miss"))
    body = output.body if output.stream is None else StreamedBody(output.stream)
    return Response(body, content_type=output.content_type, headers=headers)
