"""What the service tells its operator: metrics, one JSON log line per request,
and the memory guard that recycles a worker grown too large."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, TextIO

from ..runtime import memory
from ..runtime.metrics import Counter, Gauge, Histogram, Registry, SharedCounter
from .http import Request
from .response import Response

MIB = 1024 * 1024
# The methods counted by name (RFC 9110's and PATCH); any other is counted as
# "other", so a client inventing methods cannot grow the metrics.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH"})


class Monitor:
    """Counts, times and logs every request once its response is sent."""

    def __init__(self, *, model_load_seconds: Callable[[], float], log: TextIO | None = None):
        # The router's paths; any other path is counted as "other".
        self.known_paths: set[str] = set()
        self.started_at = time.time()
        self.log = log or sys.stdout
        # Made here, in the master under preload_app: shared by every worker.
        self.worker_starts = SharedCounter()
        self.registry = Registry()
        self.requests = self.registry.add(Counter(
            "isnet_requests_total", "Requests answered, by route, method and status.",
            ("route", "method", "status")))
        self.latency = self.registry.add(Histogram(
            "isnet_request_duration_seconds", "Time from request to response sent.", ("route",)))
        self.inference = self.registry.add(Histogram(
            "isnet_inference_seconds", "onnxruntime run time per image."))
        self.registry.add(Gauge("isnet_rss_bytes", "Resident memory of this worker.",
                                lambda: memory.rss_mb() * MIB))
        self.registry.add(Gauge("isnet_peak_rss_bytes", "Peak resident memory of this worker.",
                                lambda: memory.peak_rss_mb() * MIB))
        self.registry.add(Gauge("isnet_model_load_seconds",
                                "Seconds this worker took to create its model session.",
                                model_load_seconds))
        self.registry.add(Gauge("isnet_worker_recycles_total",
                                "Workers started after the first (recycled or replaced).",
                                lambda: max(0, self.worker_starts.value - 1)))
        self.registry.add(Gauge("isnet_uptime_seconds", "Seconds since the master started.",
                                lambda: time.time() - self.started_at))

    @property
    def requests_served(self) -> int:
        return int(self.requests.total())

    def route_of(self, request: Request) -> str:
        # Unknown paths share one label, so junk URLs cannot grow the metrics.
        return request.path if request.path in self.known_paths else "other"

    @staticmethod
    def method_of(request: Request) -> str:
        return request.method if request.method in KNOWN_METHODS else "other"

    def after_response(self, request: Request, response: Response, seconds: float) -> None:
        route = self.route_of(request)
        self.requests.inc(route, self.method_of(request), str(response.status))
        self.latency.observe(seconds, route)
        self.log_request(request, response, seconds)

    def log_request(self, request: Request, response: Response, seconds: float) -> None:
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "level": "info" if response.status < 500 else "error",
            "event": "request",
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "bytes": len(response.body),
            "ms": round(seconds * 1000, 1),
            "request_id": request.request_id,
            "pid": os.getpid(),
        }, ensure_ascii=True)
        self.log.write(line + "\n")
        self.log.flush()


class MemoryGuard:
    """After each response: above the limit, trim; still above, ask to be recycled.

    The request that crossed the line has already been answered, and the
    worker finishes it before exiting, so no request is dropped.
    """

    def __init__(self, limit_mb: float, *, log: TextIO | None = None):
        self.limit_mb = limit_mb
        self.log = log or sys.stdout
        self.request_recycle: Callable[[], None] = lambda: None
        self.recycle_requested = False

    @property
    def over_limit(self) -> bool:
        return memory.rss_mb() > self.limit_mb

    def after_response(self, request: Request, response: Response, seconds: float) -> None:
        if not self.over_limit:
            return
        memory.trim()
        if self.over_limit and not self.recycle_requested:
            self.recycle_requested = True
            self.log.write(json.dumps({
                "level": "warning", "event": "memory_recycle", "pid": os.getpid(),
                "rss_mb": memory.rss_mb(), "limit_mb": self.limit_mb}) + "\n")
            self.log.flush()
            self.request_recycle()
