"""What GET /api/bg/health and /api/bg/status answer: the worker's state, from the outside."""

from __future__ import annotations

import os
import time

from .. import __version__
from ..config import Settings
from ..model.segmenter import Segmenter
from ..runtime import cgroup, memory
from ..runtime.cache import ResultCache
from .monitoring import MemoryGuard, Monitor
from .response import Response


def health(settings: Settings, segmenter: Segmenter, memory_guard: MemoryGuard) -> Response:
    body = {"status": "healthy", "memory_mb": memory.rss_mb(),
            "model_loaded": segmenter.loaded}
    if memory_guard.over_limit:
        # Still serving (200): the guard recycles the worker after a request.
        body["status"] = "degraded"
        body["reason"] = f"memory above MEMORY_LIMIT_MB={settings.memory_limit_mb}"
    if not segmenter.loaded:
        body["status"] = "unhealthy"
        body["reason"] = segmenter.error or "the model session is not started"
        return Response.json(body, status=503)
    return Response.json(body)


def status(settings: Settings, segmenter: Segmenter, monitor: Monitor,
           cache: ResultCache) -> Response:
    return Response.json({
        "status": "ready" if segmenter.loaded else "starting",
        "version": __version__,
        "model": segmenter.name,
        "model_sha256": segmenter.sha256,
        "model_load_s": round(segmenter.load_seconds, 3),
        "memory": {
            "rss_mb": memory.rss_mb(),
            "peak_rss_mb": memory.peak_rss_mb(),
            "limit_mb": settings.memory_limit_mb,
            # The container's (cgroup's) memory limit; None when there is none.
            "cgroup_limit_mb": cgroup.memory_limit_mb(),
            "model_loaded": segmenter.loaded,
            # onnxruntime's arena kept between requests, MiB; 0 when none.
            "arena_mb": segmenter.options.arena_mb,
            # glibc's heap kept for requests' buffers, MiB; 0 when none.
            "request_heap_mb": segmenter.options.request_heap_mb,
        },
        "max_file_size_mb": settings.max_upload_mb,
        "max_dimension": settings.max_dimension_px,
        "max_image_pixels": settings.max_image_pixels,
        "allowed_extensions": list(settings.allowed_extensions),
        "cache": cache.stats(),
        "request_timeout_s": settings.request_timeout_s,
        "threads": settings.intra_op_threads,
        # The container's CPU quota, in CPUs (None: none); the default threads follow it.
        "cpu_quota": cgroup.cpu_limit(),
        "uptime_s": round(time.time() - monitor.started_at, 1),
        "requests_served": monitor.requests_served,
        "worker_starts": monitor.worker_starts.value,
        "worker_pid": os.getpid(),
        "session_pid": segmenter.session_pid,
        "auth_required": settings.api_key is not None,
        "settings": settings.public(),
    })
