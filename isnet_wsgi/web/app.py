"""The WSGI callable: a routing table, and every failure turned into its answer."""

from __future__ import annotations

import time
import traceback
from typing import Callable

from .errors import HTTPError, MethodNotAllowed, NotFound, http_error
from .http import Request
from .response import Response

Handler = Callable[[Request], Response]


class Router:
    """Exact-path routes, one dict lookup per request.

    A path that exists but not for this method answers 405 with ``Allow``;
    HEAD is answered as GET without the body.
    """

    def __init__(self):
        self._routes: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes.setdefault(path, {})[method.upper()] = handler

    def match(self, method: str, path: str) -> Handler:
        methods = self._routes.get(path)
        if methods is None:
            raise NotFound(f"No resource at {path!r}. See GET / for the API.")
        handler = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        if handler is None:
            raise MethodNotAllowed(self.allowed(path))
        return handler

    def allowed(self, path: str) -> list[str]:
        methods = set(self._routes.get(path, ()))
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def routes(self) -> list[tuple[str, str]]:
        return [(path, method) for path, methods in self._routes.items() for method in methods]


class WSGIApp:
    """Routes a request to its handler and turns whatever happens into a response.

    Functions in ``after_response`` are called with (request, response,
    seconds) once the server has sent the response: the service uses them for
    metrics, logs and the memory guard, which must not delay the client.
    """

    def __init__(self, router: Router):
        self.router = router
        self.after_response: list[Callable[[Request, Response, float], None]] = []

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request = Request(environ)
        response = self.respond(request)
        response.headers.append(("X-Request-ID", request.request_id))
        start_response(response.status_line, response.wsgi_headers())
        body = b"" if request.method == "HEAD" else response.body

        def after():
            seconds = time.perf_counter() - started
            for callback in self.after_response:
                callback(request, response, seconds)

        return _BodyThenCallback(body, after)

    def respond(self, request: Request) -> Response:
        try:
            handler = self.router.match(request.method, request.path)
            return handler(request)
        except MemoryError:
            # Never swallowed (it is an Exception): gunicorn must see it and
            # replace the worker. SystemExit and KeyboardInterrupt pass by
            # themselves: they are not Exceptions.
            raise
        except Exception as exc:
            error = http_error(exc)
            if type(error) is HTTPError:
                # A bug: log the traceback once, answer a plain 500.
                errors = request.environ.get("wsgi.errors")
                if errors is not None:
                    errors.write(traceback.format_exc())
                    errors.flush()
            return error.to_response()


class _BodyThenCallback:
    """A WSGI body whose close(), called by the server after sending, runs a callback."""

    def __init__(self, body: bytes, callback: Callable[[], None]):
        self._body = body
        self._callback = callback

    def __iter__(self):
        if isinstance(self._body, bytes):
            yield self._body
        else:  # a StreamedBody (response.py): each part as it is made
            yield from self._body

    def close(self):
        if not isinstance(self._body, bytes):
            self._body.close()
        self._callback()
