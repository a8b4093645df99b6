"""Assembles the service: settings, model, endpoints and routes, in one object."""

from __future__ import annotations

import json

from .config import Settings
from .model.segmenter import Segmenter
from .web import docs, openapi
from .web.api import BackgroundAPI
from .web.app import Router, WSGIApp
from .web.removebg import RemoveBgAPI
from .web.http import Request
from .web.response import Response
from .web.monitoring import MemoryGuard, Monitor


class Service(WSGIApp):
    """The WSGI application gunicorn serves.

    Built once in the master (it reads and verifies the model bytes there);
    ``start_worker`` creates the inference session in each worker.
    """

    def __init__(self, settings: Settings, segmenter: Segmenter, *, log=None):
        self.settings = settings
        self.segmenter = segmenter
        self.monitor = Monitor(model_load_seconds=lambda: segmenter.load_seconds, log=log)
        self.memory_guard = MemoryGuard(settings.memory_limit_mb, log=log)
        self.api = BackgroundAPI(settings, segmenter, self.monitor, self.memory_guard)
        self.removebg = RemoveBgAPI(self.api)
        super().__init__(self._routes())
        self.monitor.known_paths = {path for path, _ in self.router.routes()}
        self.after_response += [self.monitor.after_response, self.memory_guard.after_response]
        self._openapi = json.dumps(openapi.openapi_document(settings), indent=1).encode()

    def _routes(self) -> Router:
        router = Router()
        router.add("GET", "/", self.index)
        router.add("GET", "/openapi.json", self.openapi)
        router.add("GET", "/api/bg/health", self.api.health)
        router.add("GET", "/api/bg/status", self.api.status)
        router.add("POST", "/api/bg/remove", self.api.remove)
        router.add("POST", "/api/bg/change_color", self.api.change_color)
        router.add("POST", "/api/bg/clear_cache", self.api.clear_cache)
        router.add("POST", "/v1.0/removebg", self.removebg.removebg)
        router.add("GET", "/metrics", self.metrics)
        return router

    def start_worker(self, request_recycle=None) -> None:
        """Run once in each worker: create the session, count the start.

        ``request_recycle`` is how the memory guard asks the server to replace
        this worker after the current response (gunicorn: ``worker.alive = False``).
        """
        self.segmenter.start()
        self.monitor.worker_starts.inc()
        if request_recycle is not None:
            self.memory_guard.request_recycle = request_recycle

    def metrics(self, request: Request) -> Response:
        return Response(self.monitor.registry.exposition(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")

    def index(self, request: Request) -> Response:
        host = request.header("Host") or f"localhost:{self.settings.port}"
        page = docs.index_html(self.settings, f"http://{host}")
        return Response(page.encode(), content_type="text/html; charset=utf-8")

    def openapi(self, request: Request) -> Response:
        return Response(self._openapi, content_type="application/json")


def create_app(settings: Settings | None = None) -> Service:
    """Build the service from the environment (or the given settings)."""
    settings = settings or Settings.from_env()
    return Service(settings, Segmenter.from_settings(settings))
