"""The endpoints under /api/bg: what each one reads, checks and answers.

Reading the upload (upload.py), the key (auth.py), the cache (results.py)
and the status page (status.py) each live in their own module; every
failure's status is web/errors.py's.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

from ..config import Settings
from ..model.segmenter import Segmenter
from ..options import COLOR_GROUPS, REMOVE_GROUPS, color_options, remove_options
from ..pipeline import Output, Pipeline
from ..runtime import memory
from . import status as status_page
from .auth import require_bearer
from .errors import ServiceUnavailable
from .http import Request
from .monitoring import MemoryGuard, Monitor
from .response import Response
from .results import Results, download
from .upload import read_upload

# Seconds kept back from the request timeout for decoding, encoding and sending.
RESPONSE_MARGIN_S = 5.0
# The least inference time a request gets: a request whose budget is spent
# (a short timeout, a long upload) is answered 503 at once, not killed.
MIN_INFERENCE_BUDGET_S = 0.1


class BackgroundAPI:
    """Handlers for every /api/bg route, sharing one settings object and model."""

    def __init__(self, settings: Settings, segmenter: Segmenter, monitor: Monitor,
                 memory_guard: MemoryGuard):
        self.settings = settings
        self.segmenter = segmenter
        self.monitor = monitor
        self.memory_guard = memory_guard
        # stream: a full-resolution PNG is sent as it is encoded (response.py).
        self.pipeline = Pipeline(settings, segmenter,
                                 observe_inference_s=monitor.inference.observe, stream=True)
        self.results = Results(settings.cache_bytes, monitor.registry)
        self.limits = {"ceiling_px": settings.max_dimension_px,
                       "refine_default": settings.refine_default}

    def health(self, request: Request) -> Response:
        return status_page.health(self.settings, self.segmenter, self.memory_guard)

    def status(self, request: Request) -> Response:
        return status_page.status(self.settings, self.segmenter, self.monitor, self.results.cache)

    def remove(self, request: Request) -> Response:
        require_bearer(request, self.settings.api_key)
        upload = read_upload(request, self.settings)
        options = upload.options(remove_options, REMOVE_GROUPS, **self.limits)
        output, hit = self.results.get_or_make(
            "remove", (upload.file.data,), options, lambda: self.run(
                lambda: self.pipeline.remove(upload.file.data, options,
                                             timeout_s=self.inference_budget_s(request))))
        return download(output, upload.file.filename, hit)

    def change_color(self, request: Request) -> Response:
        require_bearer(request, self.settings.api_key)
        upload = read_upload(request, self.settings, background=True)
        background = upload.background.data if upload.background else None
        options = upload.options(color_options, COLOR_GROUPS, **self.limits,
                                 background_file=background is not None)
        output, hit = self.results.get_or_make(
            "change_color", (upload.file.data, background), options, lambda: self.run(
                lambda: self.pipeline.change_color(
                    upload.file.data, options, background_data=background,
                    timeout_s=self.inference_budget_s(request))))
        return download(output, upload.file.filename, hit)

    def clear_cache(self, request: Request) -> Response:
        require_bearer(request, self.settings.api_key)
        before_mb = memory.rss_mb()
        # The results first, so the collector and malloc_trim can give them back.
        cached = self.results.cache.clear()
        collected = gc.collect()
        trimmed = memory.trim()
        return Response.json({
            "status": "cleared",
            "cleared": {"results": cached, "gc_objects": collected, "malloc_trim": trimmed},
            "memory_before_mb": before_mb,
            "memory_after_mb": memory.rss_mb(),
        })

    def run(self, make: Callable[[], Output]) -> Output:
        """A result from the model, or 503 while it is not loaded."""
        if not self.segmenter.loaded:
            raise ServiceUnavailable(self.segmenter.error or "The model is not loaded yet.",
                                     code="model_unavailable", retry_after_s=5)
        return make()

    def inference_budget_s(self, request: Request) -> float:
        # NOTE: counted from the request's arrival: the body read (up to
        # UPLOAD_TIMEOUT_S) comes out of the same REQUEST_TIMEOUT_S.
        spent_s = time.monotonic() - request.received_at
        return max(MIN_INFERENCE_BUDGET_S,
                   self.settings.request_timeout_s - RESPONSE_MARGIN_S - spent_s)
