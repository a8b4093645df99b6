"""Request and Response helpers, and one HTTPError subclass per status.

A handler can ``raise`` an HTTPError anywhere; the app answers it with
``to_response()``, a JSON body ``{"error": code, "message": text}``.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs, quote

from ..numerals import parse_whole_number

JSON_TYPE = "application/json"


class Response:
    """A complete response: status, headers and a body held in memory."""

    def __init__(self, body: bytes = b"", *, status: int = 200,
                 content_type: str = "text/plain; charset=utf-8",
                 headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type)] + list(headers or [])

    @classmethod
    def json(cls, data, *, status: int = 200, headers=None) -> "Response":
        body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        return cls(body, status=status, content_type=JSON_TYPE, headers=headers)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def wsgi_headers(self) -> list[tuple[str, str]]:
        return self.headers + [("Content-Length", str(len(self.body)))]


class HTTPError(Exception):
    """An error answered as JSON; the base class is the plain 500 of a bug,
    its subclasses the 4xx/503 a client can do something about."""

    status = 500
    code = "internal_error"
    message = "The server failed to answer this request."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 headers: list[tuple[str, str]] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.headers = list(headers or [])

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message}

    def to_response(self) -> Response:
        return Response.json(self.to_dict(), status=self.status, headers=self.headers)


class BadRequest(HTTPError):
    status, code, message = 400, "bad_request", "The request could not be understood."


class Unauthorized(HTTPError):
    status, code, message = 401, "unauthorized", "A valid API key is required."

    def __init__(self, message=None, **kwargs):
        super().__init__(message, **kwargs)
        self.headers.append(("WWW-Authenticate", 'Bearer realm="isnet-wsgi"'))


class NotFound(HTTPError):
    status, code, message = 404, "not_found", "No such resource."


class MethodNotAllowed(HTTPError):
    status, code, message = 405, "method_not_allowed", "This method is not allowed here."

    def __init__(self, allowed: list[str], message=None, **kwargs):
        super().__init__(message or f"Allowed methods: {', '.join(allowed)}.", **kwargs)
        self.headers.append(("Allow", ", ".join(allowed)))


class RequestTimeout(HTTPError):
    """The client sent its request too slowly (isnet_wsgi/server/client_limits.py)."""

    status, code, message = 408, "request_timeout", "The request arrived too slowly."


class PayloadTooLarge(HTTPError):
    status, code, message = 413, "payload_too_large", "The upload is too large."


class UnsupportedMediaType(HTTPError):
    status, code, message = 415, "unsupported_media_type", "This media type is not supported."


class ServiceUnavailable(HTTPError):
    status, code, message = 503, "unavailable", "The service cannot answer right now."

    def __init__(self, message=None, *, retry_after_s: int | None = None, **kwargs):
        super().__init__(message, **kwargs)
        if retry_after_s is not None:
            self.headers.append(("Retry-After", str(retry_after_s)))


# A client's or proxy's request id is echoed back only if it is this tame.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Request:
    """A thin, read-only view of a WSGI environ."""

    def __init__(self, environ: dict):
        self.environ = environ
        # The head has been read; the request's time budget counts from here.
        self.received_at = time.monotonic()
        given = self.header("X-Request-ID") or ""
        self.request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @property
    def method(self) -> str:
        return self.environ.get("REQUEST_METHOD", "GET").upper()

    @property
    def path(self) -> str:
        return self.environ.get("PATH_INFO", "") or "/"

    @property
    def query(self) -> dict[str, list[str]]:
        # NOTE: junk in a query string is ignored, never an error.
        return parse_qs(self.environ.get("QUERY_STRING", ""), keep_blank_values=True)

    def header(self, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return self.environ.get(key) or None
        return self.environ.get("HTTP_" + key)

    @property
    def content_length(self) -> int | None:
        """The declared body length; None when absent (chunked). 400 if junk."""
        raw = self.header("Content-Length")
        if raw is None:
            return None
        try:
            return parse_whole_number(raw.strip())
        except ValueError:
            raise BadRequest("Content-Length is not a number.", code="bad_content_length") from None

    def body_reader(self, max_bytes: int):
        """A read(n) that stops at Content-Length and refuses more than max_bytes.

        The declared length is checked before anything is read, and the bytes
        actually received are counted as they stream (chunked bodies have no
        declared length), so an oversized body is refused early either way.
        """
        declared = self.content_length
        if declared is not None and declared > max_bytes:
            raise PayloadTooLarge(
                f"The request body is {declared} bytes; the limit is {max_bytes}.",
                code="body_too_large")
        return BoundedReader(self.environ["wsgi.input"], declared, max_bytes)


class BoundedReader:
    """Reads at most ``declared`` bytes (if known) and never more than ``max_bytes``."""

    def __init__(self, stream, declared: int | None, max_bytes: int):
        self._stream = stream
        self._remaining = declared
        self._max_bytes = max_bytes
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return b""
        try:
            chunk = self._stream.read(size)
        except (MemoryError, HTTPError):  # HTTPError: RequestTimeout, a slow client
            raise
        except Exception as error:
            # The server's reader raises its own errors for a broken transfer
            # encoding or a vanished client (gunicorn: InvalidChunkSize, ...):
            # the client's fault, so a 400, not a 500.
            raise BadRequest(f"The request body could not be read ({type(error).__name__}).",
                             code="unreadable_body") from None
        self.bytes_read += len(chunk)
        if self._remaining is not None:
            self._remaining -= len(chunk)
        if self.bytes_read > self._max_bytes:
            raise PayloadTooLarge(
                f"The request body exceeds the limit of {self._max_bytes} bytes.",
                code="body_too_large")
        return chunk


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")


def attachment_header(filename: str) -> str:
    """A Content-Disposition value for a download, safe whatever the name.

    The plain ``filename`` is ASCII with anything unsafe replaced; the exact
    name travels percent-encoded in ``filename*`` (RFC 6266 / RFC 5987), so
    quotes, CR/LF and non-ASCII can never break or inject a header.
    """
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = _UNSAFE_FILENAME.sub("_", ascii_name).strip(" .") or "image"
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
