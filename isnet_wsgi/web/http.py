"""The request: a read-only view of the environ, its body read within a limit."""

from __future__ import annotations

import re
import time
import unicodedata
import uuid
from urllib.parse import parse_qs, quote

from ..numerals import parse_whole_number
from .errors import BadRequest, HTTPError, PayloadTooLarge
from .multipart import size_text

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
        # NOTE: read leniently here; which names and how many values an endpoint
        # takes is its own to say (upload.py refuses unknown and repeated options).
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

    def body_reader(self, max_bytes: int, *, limit_text: str = ""):
        """A read(n) that stops at Content-Length and refuses more than max_bytes.

        The declared length is checked before anything is read, and the bytes
        actually received are counted as they stream (chunked bodies have no
        declared length), so an oversized body is refused early either way.
        ``limit_text`` says which setting makes the limit (MAX_UPLOAD_MB=8).
        """
        declared = self.content_length
        if declared is not None and declared > max_bytes:
            raise body_too_large(max_bytes, limit_text, declared)
        return BoundedReader(self.environ["wsgi.input"], declared, max_bytes, limit_text)


def body_too_large(max_bytes: int, limit_text: str, declared: int | None = None) -> PayloadTooLarge:
    size = f"is {size_text(declared)}" if declared is not None else "is larger"
    because = f" ({limit_text})" if limit_text else ""
    return PayloadTooLarge(f"The request body {size}; the limit is {size_text(max_bytes)}"
                           f"{because}.", code="body_too_large")


class BoundedReader:
    """Reads at most ``declared`` bytes (if known) and never more than ``max_bytes``."""

    def __init__(self, stream, declared: int | None, max_bytes: int, limit_text: str = ""):
        self._stream = stream
        self._remaining = declared
        self._max_bytes = max_bytes
        self._limit_text = limit_text
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
            raise body_too_large(self._max_bytes, self._limit_text)
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
