"""gunicorn's sync worker, with a bounded share for each client and JSON errors.

Still one sync worker (``worker_class`` in gunicorn.conf.py names this one):
it serves one connection at a time, and adds three things to gunicorn's own.

- Time limits on the connection (client_limits.py): a client that sends or
  reads slowly gets a 408 or is dropped, and the next client is served.
- Errors gunicorn answers itself, before the app sees a request (malformed
  framing, a request line or headers over its limits, an odd ``Expect``, an
  HTTP version it does not speak), are the API's JSON, not gunicorn's HTML.
- A HTTP/1.1 request without exactly one ``Host`` is refused (RFC 9112 3.2).
"""

from __future__ import annotations

import re

from gunicorn.http import errors as gunicorn_errors
from gunicorn.workers.sync import SyncWorker

from ..web.http import BadRequest, HTTPError, Response
from .client_limits import ClientLimits, ClientTooSlowToRead, PacedSocket

# Read size while throwing away what a client still sends after the answer.
_LINGER_CHUNK_BYTES = 64 * 1024
# An HTTP version whose major number is not 1 (gunicorn reports the version
# as text or as a tuple, depending on where it failed).
_OTHER_MAJOR_VERSION = re.compile(r"HTTP/([02-9])\.|\(([02-9]), ")
# How much of what gunicorn quotes back from a bad request goes into the answer.
_DETAIL_CHARS = 120


class MissingHost(gunicorn_errors.ParseException):
    """A HTTP/1.1 request with no Host header, or more than one."""


class BoundedSyncWorker(SyncWorker):
    """gunicorn's SyncWorker with client time limits and JSON error answers."""

    def load_wsgi(self):
        super().load_wsgi()
        # The app's settings (loaded once in the master) say the limits.
        self.client_limits = ClientLimits.from_settings(self.wsgi.settings)

    def handle(self, listener, client, addr):
        super().handle(listener, PacedSocket(client, self.client_limits), addr)

    def handle_request(self, listener, req, client, addr):
        client.start_body()
        if req.version >= (1, 1):
            hosts = sum(1 for name, _ in req.headers if name.upper() == "HOST")
            if hosts != 1:
                raise MissingHost(f"{hosts} Host headers")
        try:
            super().handle_request(listener, req, client, addr)
        except ClientTooSlowToRead as error:
            self.log.warning("Dropped a client from ip=%s: %s", (addr or ("",))[0], error)
            raise
        _linger(req, client)

    def handle_error(self, req, client, addr, exc):
        error = _as_http_error(exc)
        if error.status >= 500 and error.status != 505:
            self.log.exception("Error handling request")
        else:
            self.log.warning("Invalid request from ip=%s: %s (%s)",
                             (addr or ("",))[0], error.code, exc)
        try:
            client.sendall(_raw_response(error.to_response()))
        except OSError:
            self.log.debug("Failed to send error message.")


def _linger(req, client: PacedSocket) -> None:
    """Read and throw away the rest of a body the app did not read.

    NOTE: an early answer (413 for a declared size, 401, 404) leaves the body
    unread; closing then makes the kernel reset the connection, and a client
    still sending never reads the answer. nginx's lingering_close, bounded.
    """
    if client.timed_out:
        return  # a slow client is dropped, not waited for
    client.start_linger()
    try:
        while req.body.read(_LINGER_CHUNK_BYTES):
            pass
    except Exception:  # a timeout, a broken chunk, a vanished client: stop lingering
        pass


_CLIENT_ERRORS: dict[type, tuple[int, str, str]] = {
    gunicorn_errors.LimitRequestLine: (
        414, "request_line_too_long", "The request line is too long."),
    gunicorn_errors.LimitRequestHeaders: (
        431, "headers_too_large", "The request has too many headers, or one too long."),
    gunicorn_errors.ExpectationFailed: (
        417, "expectation_failed", "Only 'Expect: 100-continue' is supported."),
    gunicorn_errors.UnsupportedTransferCoding: (
        501, "unsupported_transfer_coding", "Only the chunked transfer coding is supported."),
    MissingHost: (400, "missing_host", "A HTTP/1.1 request needs exactly one Host header."),
}


def _as_http_error(exc: BaseException) -> HTTPError:
    """The API's error for what gunicorn (or the client limits) raised."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, gunicorn_errors.InvalidHTTPVersion):
        if _OTHER_MAJOR_VERSION.search(str(exc)):
            return _error(505, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1 are spoken.")
        return BadRequest(f"Invalid HTTP version: {_detail(exc)}", code="bad_http_version")
    for kind, (status, code, message) in _CLIENT_ERRORS.items():
        if isinstance(exc, kind):
            return _error(status, code, message)
    if isinstance(exc, (gunicorn_errors.ParseException, gunicorn_errors.NoMoreData)):
        return BadRequest(f"The request is malformed: {_detail(exc)}", code="malformed_request")
    return HTTPError()


def _error(status: int, code: str, message: str) -> HTTPError:
    error = HTTPError(message, code=code)
    error.status = status
    return error


def _detail(exc: BaseException) -> str:
    # NOTE: it quotes the client's bytes: cut short; json.dumps escapes the rest.
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "..."


def _raw_response(response: Response) -> bytes:
    """A complete HTTP/1.1 response on the wire, for answers sent outside the app."""
    lines = [f"HTTP/1.1 {response.status_line}",
             *(f"{name}: {value}" for name, value in response.wsgi_headers()),
             "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + response.body

