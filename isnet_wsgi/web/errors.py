"""One error class per status, and the one table from what went wrong to the answer.

A handler can ``raise`` an HTTPError anywhere; the app answers it with
``to_response()``, a JSON body ``{"error": code, "message": text}``
(``to_dict()``). Errors raised below the web layer (an image that will not
decode, an option out of range, a malformed form, gunicorn's parser
refusing a request line) are not HTTP errors: ``http_error`` turns each
into its class by ``ERROR_TABLE``, so the status of every failure is
decided here and nowhere else.
"""

from __future__ import annotations

import re
from typing import Callable

from gunicorn.http import errors as gunicorn_errors

from ..image.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from ..model.segmenter import InferenceTimeout
from ..options import OptionError
from .multipart import BoundaryError, MultipartError, MultipartLimitError, NotMultipartError
from .response import Response

# How much of what a parser quotes back from a bad request goes into the answer.
DETAIL_CHARS = 120


class HTTPError(Exception):
    """An error answered as JSON; the base class is the plain 500 of a bug,
    its subclasses the 4xx/5xx a client can do something about."""

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


class Forbidden(HTTPError):
    """A key was sent and it is wrong (remove.bg's answer to a bad X-Api-Key)."""

    status, code, message = 403, "forbidden", "The API key is not valid."


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


class URITooLong(HTTPError):
    status, code, message = 414, "request_line_too_long", "The request line is too long."


class UnsupportedMediaType(HTTPError):
    status, code, message = 415, "unsupported_media_type", "This media type is not supported."


class ExpectationFailed(HTTPError):
    status, code, message = (417, "expectation_failed",
                             "Only 'Expect: 100-continue' is supported.")


class RequestHeaderFieldsTooLarge(HTTPError):
    status, code, message = (431, "headers_too_large",
                             "The request has too many headers, or one too long.")


class NotImplementedByServer(HTTPError):
    """501: the request asks for something HTTP allows and this server does not do."""

    status, code, message = 501, "not_implemented", "The server does not support this."


class ServiceUnavailable(HTTPError):
    status, code, message = 503, "unavailable", "The service cannot answer right now."

    def __init__(self, message=None, *, retry_after_s: int | None = None, **kwargs):
        super().__init__(message, **kwargs)
        if retry_after_s is not None:
            self.headers.append(("Retry-After", str(retry_after_s)))


class HTTPVersionNotSupported(HTTPError):
    status, code, message = (505, "http_version_not_supported",
                             "Only HTTP/1.0 and HTTP/1.1 are spoken.")


class MissingHost(BadRequest):
    """A HTTP/1.1 request with no Host header, or more than one (RFC 9112 3.2)."""

    code = "missing_host"

    def __init__(self, detail: str = ""):
        super().__init__("A HTTP/1.1 request needs exactly one Host header"
                         + (f" (got {detail})." if detail else "."))


def detail(exc: BaseException) -> str:
    """What an exception says, cut short.

    NOTE: parsers quote the client's bytes; json.dumps escapes the rest.
    """
    text = str(exc) or type(exc).__name__
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "..."


def _answer(error_class: type[HTTPError], message: str | None = None, *,
            code: str | None = None, **kwargs) -> Callable[[BaseException], HTTPError]:
    """An entry of the table: the class, and the message ({detail}: the
    exception's own words) and code when the class's own are not right
    (None: the exception's ``code`` attribute, if it has one)."""
    def make(exc: BaseException) -> HTTPError:
        text = message.format(detail=detail(exc)) if message else str(exc)
        return error_class(text, code=code or getattr(exc, "code", None), **kwargs)
    return make


# An HTTP version whose major number is not 1 (gunicorn reports the version
# as text or as a tuple, depending on where it failed).
_OTHER_MAJOR_VERSION = re.compile(r"HTTP/([02-9])\.|\(([02-9]), ")


def _http_version(exc: BaseException) -> HTTPError:
    if _OTHER_MAJOR_VERSION.search(str(exc)):
        return HTTPVersionNotSupported()
    return BadRequest(f"Invalid HTTP version: {detail(exc)}", code="bad_http_version")


# What each failure is answered with. First match wins: a subclass before its base.
ERROR_TABLE: tuple[tuple[type[BaseException], Callable[[BaseException], HTTPError]], ...] = (
    # The image (image/errors.py).
    (ImageTooLarge, _answer(PayloadTooLarge)),  # and DecodeBudgetExceeded, its subclass
    (UnsupportedImage, _answer(UnsupportedMediaType)),
    (InvalidImage, _answer(BadRequest)),
    # The options (options.py).
    (OptionError, _answer(BadRequest)),
    # The form (multipart.py).
    (NotMultipartError, _answer(
        UnsupportedMediaType, "Send the image as multipart/form-data in a field named 'file', "
        "or as the raw body with Content-Type image/* ({detail}).", code="not_multipart")),
    # NOTE: the media type is supported, the request malformed: 400, not 415.
    (BoundaryError, _answer(BadRequest, "The Content-Type has no usable boundary ({detail}); "
                            "let the client write it (curl -F, a browser form).")),
    # Each limit its own code and message, so the client knows which one it hit.
    (MultipartLimitError, _answer(PayloadTooLarge, "The form is over a limit: {detail}.")),
    (MultipartError, _answer(BadRequest, "The multipart body is malformed: {detail}",
                             code="malformed_multipart")),
    # The model (model/segmenter.py).
    (InferenceTimeout, _answer(ServiceUnavailable, "The image took too long to process.",
                               code="timeout", retry_after_s=10)),
    # gunicorn's request parser, before the app sees a request (server/worker.py).
    (gunicorn_errors.LimitRequestLine, lambda exc: URITooLong()),
    (gunicorn_errors.LimitRequestHeaders, lambda exc: RequestHeaderFieldsTooLarge()),
    (gunicorn_errors.ExpectationFailed, lambda exc: ExpectationFailed()),
    (gunicorn_errors.UnsupportedTransferCoding, lambda exc: NotImplementedByServer(
        "Only the chunked transfer coding is supported.", code="unsupported_transfer_coding")),
    (gunicorn_errors.InvalidHTTPVersion, _http_version),
    (gunicorn_errors.ParseException, _answer(BadRequest, "The request is malformed: {detail}",
                                             code="malformed_request")),
    (gunicorn_errors.NoMoreData, _answer(BadRequest, "The request is malformed: {detail}",
                                         code="malformed_request")),
)


def http_error(exc: BaseException) -> HTTPError:
    """The answer to an exception: itself if it is an HTTPError, its table
    entry if it has one, else the plain 500 of a bug."""
    if isinstance(exc, HTTPError):
        return exc
    for kind, make in ERROR_TABLE:
        if isinstance(exc, kind):
            return make(exc)
    return HTTPError()
