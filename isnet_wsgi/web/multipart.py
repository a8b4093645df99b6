"""Incremental multipart/form-data decoder (RFC 7578, RFC 2046).

``MultipartDecoder`` does no I/O: feed it bytes with ``receive_data`` and pull
events with ``next_event`` until it answers ``NEED_DATA``. ``read_form`` drives
it from a blocking ``read(n)`` and collects a ``Form``, enforcing the per-part
size limits while the body streams in.

A malformed body raises ``MultipartError`` (the app answers 400); a body over
a limit raises ``MultipartLimitError`` (413). Nothing is ever silently dropped.
"""

from __future__ import annotations

import enum
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from .headers import parse_options_header


class MultipartError(ValueError):
    """The body is not valid multipart/form-data. The app answers 400."""


class NotMultipartError(MultipartError):
    """The Content-Type is not multipart/form-data at all. The app answers 415."""


class BoundaryError(MultipartError):
    """multipart/form-data whose boundary is missing or not a valid one (400).
    ``code`` is the API's name for which."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.code = "missing_boundary" if missing else "invalid_boundary"


class MultipartLimitError(MultipartError):
    """A size/count limit was exceeded. The app answers 413.

    ``limit`` names which: 'file', 'field', 'header' or 'parts' (the whole
    body's limit is the reader's: http.BoundedReader); ``code`` is the API's
    name for it.
    """

    _CODES = {"file": "file_too_large", "field": "field_too_large",
              "header": "part_headers_too_large", "parts": "too_many_parts"}

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.code = self._CODES[limit]


# The limits read_form applies unless told otherwise.
MAX_FIELD_BYTES = 64 * 1024  # one text field
MAX_PART_HEADER_BYTES = 8192  # one part's header block
MAX_PARTS = 16  # files and fields together


# --- the boundary -----------------------------------------------------------

# RFC 2046 allows only its bchars, but real clients stray outside them (WebOb
# and webtest send "$"), so accept any printable ASCII but the quote, 1 to 70
# characters, not ending with a space. Control bytes and CR/LF stay refused.
_BOUNDARY_RE = re.compile(rb"[\x20-\x21\x23-\x7e]{0,69}[\x21\x23-\x7e]")


def _check_boundary(boundary: bytes) -> bytes:
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise BoundaryError(f"invalid multipart boundary {boundary!r}")
    return boundary


def boundary_from_content_type(value: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, as bytes."""
    mimetype, params = parse_options_header(value)
    if mimetype != "multipart/form-data":
        raise NotMultipartError(f"expected multipart/form-data, got {mimetype or 'nothing'!r}")
    if "boundary" not in params:
        raise BoundaryError("multipart/form-data without a boundary", missing=True)
    return _check_boundary(params["boundary"].encode("utf-8"))


# --- events -----------------------------------------------------------------


@dataclass(frozen=True)
class PartStart:
    """A part begins. ``filename`` is None for a text field, str (maybe '') for a file."""

    name: str
    filename: str | None
    content_type: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class PartData:
    """A piece of the current part's body; ``more`` is False on its last piece."""

    data: bytes
    more: bool


@dataclass(frozen=True)
class Epilogue:
    """The closing delimiter was read; anything after it is ignored."""


class NeedData:
    """Type of NEED_DATA: the decoder cannot go on without more input."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()
Event = PartStart | PartData | Epilogue | NeedData


# --- the decoder ------------------------------------------------------------

_CR = ord("\r")
_HEADER_NAME_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 token


class _State(enum.Enum):
    PREAMBLE = enum.auto()  # before the first delimiter; skipped
    DELIMITER = enum.auto()  # just after "--boundary": "--" closes, else padding + newline
    HEADERS = enum.auto()  # a part's header block, up to its blank line
    DATA = enum.auto()  # a part's body, up to the next delimiter
    DONE = enum.auto()  # closing delimiter seen; input is ignored


class MultipartDecoder:
    """Sans-I/O multipart/form-data decoder.

    Each part yields one PartStart, then PartData events, the last with
    ``more=False`` (an empty part yields a single ``PartData(b"", False)``).
    After the closing delimiter comes one Epilogue, then NEED_DATA forever.
    Once it has raised MultipartError the decoder must not be used again.
    """

    def __init__(self, boundary: bytes, *, max_header_bytes: int = MAX_PART_HEADER_BYTES,
                 max_parts: int | None = MAX_PARTS) -> None:
        # Every delimiter but the first follows a line break: searching for
        # "\n--boundary" finds them all, and a CR before it is the CRLF's.
        self._delimiter = b"\n--" + _check_boundary(boundary)
        # NOTE: the body starts at the start of a line, so a virtual CRLF in
        # front lets a first delimiter at offset 0 match that same pattern.
        self._buffer = bytearray(b"\r\n")
        self._state = _State.PREAMBLE
        self._end_of_input = False
        self._max_header_bytes = max_header_bytes
        self._max_parts, self._part_count = max_parts, 0
        self._header_scan = 0  # where the next unread header line starts

    def receive_data(self, data: bytes | None) -> None:
        """Append input; None marks its end."""
        if self._end_of_input:
            raise RuntimeError("receive_data() called after the end of input")
        if data is None:
            self._end_of_input = True
        elif self._state is not _State.DONE:
            self._buffer += data

    def next_event(self) -> Event:
        """The next event, or NEED_DATA when the buffered input is used up."""
        if self._state is _State.PREAMBLE:
            return self._skip_preamble()
        if self._state is _State.DELIMITER:
            return self._finish_delimiter()
        if self._state is _State.HEADERS:
            return self._read_headers()
        if self._state is _State.DATA:
            return self._read_data()
        return NEED_DATA

    def _need_data(self, message: str = "unexpected end of body") -> NeedData:
        if self._end_of_input:
            raise MultipartError(message)
        return NEED_DATA

    def _skip_preamble(self) -> Event:
        index = self._buffer.find(self._delimiter)
        if index == -1:
            # RFC 2046: the preamble is ignored; keep only a possible partial delimiter.
            del self._buffer[: _safe_end(self._buffer, self._delimiter)]
            return self._need_data("no multipart boundary found in the body")
        del self._buffer[: index + len(self._delimiter)]
        self._state = _State.DELIMITER
        return self.next_event()

    def _finish_delimiter(self) -> Event:
        buffer = self._buffer
        if buffer[:2] == b"--":  # the close delimiter; the epilogue is ignored
            self._state = _State.DONE
            buffer.clear()
            return Epilogue()
        if buffer == b"-":  # may yet become the "--" of the close delimiter
            return self._need_data()
        line_end = buffer.find(b"\n")
        line = bytes(buffer if line_end == -1 else buffer[:line_end])
        # Transport padding (spaces, tabs) may follow the boundary; nothing else.
        if line.removesuffix(b"\r").strip(b" \t"):
            raise MultipartError("unexpected bytes after a boundary delimiter")
        if line_end == -1:
            if len(buffer) > self._max_header_bytes:
                raise MultipartError("boundary delimiter line too long")
            return self._need_data()
        del buffer[: line_end + 1]
        self._part_count += 1
        if self._max_parts is not None and self._part_count > self._max_parts:
            message = f"a form may have at most {self._max_parts} parts"
            raise MultipartLimitError(message, limit="parts")
        self._state = _State.HEADERS
        self._header_scan = 0
        return self.next_event()

    def _read_headers(self) -> Event:
        buffer = self._buffer
        while (line_end := buffer.find(b"\n", self._header_scan)) != -1:
            line_start, self._header_scan = self._header_scan, line_end + 1
            if buffer[line_start:line_end] in (b"", b"\r"):  # the blank line ends the block
                break
        # NOTE: an unfinished block is at least one byte longer than the buffer,
        # so the limit refuses the same bodies however the input was split.
        block_bytes = self._header_scan if line_end != -1 else len(buffer) + 1
        if block_bytes > self._max_header_bytes:
            message = f"a part's headers may be at most {self._max_header_bytes} bytes"
            raise MultipartLimitError(message, limit="header")
        if line_end == -1:
            return self._need_data()
        event = _part_start(_parse_header_lines(bytes(buffer[:line_start])))
        del buffer[: self._header_scan]
        self._state = _State.DATA
        return event

    def _read_data(self) -> Event:
        buffer = self._buffer
        index = buffer.find(self._delimiter)
        if index == -1:
            if self._end_of_input:
                raise MultipartError("unexpected end of body")
            end = _safe_end(buffer, self._delimiter)
            return self._emit_data(end, consumed=end, more=True) if end else NEED_DATA
        end = index - 1 if index and buffer[index - 1] == _CR else index
        event = self._emit_data(end, consumed=index + len(self._delimiter), more=False)
        self._state = _State.DELIMITER
        return event

    def _emit_data(self, end: int, *, consumed: int, more: bool) -> PartData:
        data = bytes(self._buffer[:end])
        del self._buffer[:consumed]
        return PartData(data, more)


def _safe_end(buffer: bytearray, delimiter: bytes) -> int:
    """How many leading bytes of ``buffer`` cannot belong to a delimiter.

    The buffer holds no whole delimiter; only a tail that is a prefix of one
    (and the CR before it) has to wait for more input. Everything before can
    go, which keeps the buffer short and each search linear in new input.
    """
    newline = buffer.find(b"\n", max(0, len(buffer) - len(delimiter) + 1))
    while newline != -1 and not delimiter.startswith(buffer[newline:]):
        newline = buffer.find(b"\n", newline + 1)
    end = len(buffer) if newline == -1 else newline
    if end and buffer[end - 1] == _CR:
        end -= 1  # it may be the CR of "\r\n--boundary"
    return end


def _parse_header_lines(block: bytes) -> dict[str, str]:
    """Header lines (each ending in LF or CRLF) -> {lower-cased name: value}."""
    headers: dict[str, str] = {}
    for raw_line in block.split(b"\n")[:-1]:
        line = raw_line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            raise MultipartError("obsolete line folding in part headers")
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME_RE.fullmatch(name):
            raise MultipartError("malformed part header line")
        value = value.strip(b" \t")
        # A CR or NUL here is an attempt to smuggle a header past a proxy.
        if b"\r" in value or b"\0" in value:
            raise MultipartError("CR or NUL in a part header")
        key = name.decode("ascii").lower()
        if key in headers:
            raise MultipartError(f"duplicate part header {key!r}")
        headers[key] = _decode_header_value(value)
    return headers


def _decode_header_value(value: bytes) -> str:
    # NOTE: browsers send non-ASCII filenames as raw UTF-8; other bytes are
    # kept one for one as Latin-1 for the app to sanitise, never refused.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _part_start(headers: dict[str, str]) -> PartStart:
    disposition, params = parse_options_header(headers.get("content-disposition"))
    if disposition != "form-data":
        raise MultipartError("part without Content-Disposition: form-data")
    if "name" not in params:
        raise MultipartError("part without a name")
    return PartStart(params["name"], params.get("filename"), headers.get("content-type"), headers)


# --- blocking reader --------------------------------------------------------


@dataclass(frozen=True)
class FormFile:
    """An uploaded file; ``filename`` as the client sent it, unsanitised."""

    name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Form:
    """Text fields and files of a form, each name mapped to its values in order."""

    fields: dict[str, list[str]] = dataclass_field(default_factory=dict)
    files: dict[str, list[FormFile]] = dataclass_field(default_factory=dict)


def read_form(read: Callable[[int], bytes], boundary: bytes, *, max_file_bytes: int,
              max_field_bytes: int = MAX_FIELD_BYTES, max_parts: int = MAX_PARTS,
              chunk_bytes: int = 64 * 1024, file_limit_text: str = "") -> Form:
    """Read a whole multipart/form-data body from ``read(n)`` (b'' at its end).

    A part over its limit raises MultipartLimitError as soon as it passes it,
    without reading the rest, so memory stays within the limits. Reading
    stops at the closing delimiter. ``file_limit_text`` says where the
    file limit comes from, for the error ("MAX_UPLOAD_MB=8").
    """
    decoder = MultipartDecoder(boundary, max_parts=max_parts)
    form, part = Form(), None
    while not isinstance(event := decoder.next_event(), Epilogue):
        if isinstance(event, NeedData):
            decoder.receive_data(read(chunk_bytes) or None)
        elif isinstance(event, PartStart):
            is_file = event.filename is not None
            part = _PartCollector(event, max_file_bytes if is_file else max_field_bytes,
                                  file_limit_text if is_file else "")
        elif part is not None:  # always: a PartData follows its PartStart
            part.write(event.data)
            if not event.more:
                part.add_to(form)
    return form


class _PartCollector:
    """One part's data, refused as soon as it passes its limit."""

    def __init__(self, start: PartStart, max_bytes: int, limit_text: str = "") -> None:
        self.start, self.max_bytes, self.limit_text = start, max_bytes, limit_text
        self.data = io.BytesIO()  # PERF: getvalue() hands over its buffer without a copy

    def write(self, data: bytes) -> None:
        if self.data.tell() + len(data) > self.max_bytes:
            kind = "file" if self.start.filename is not None else "field"
            because = f" ({self.limit_text})" if self.limit_text else ""
            message = (f"a {kind} may be at most {size_text(self.max_bytes)}{because}; "
                       f"{self.start.name!r} is larger")
            raise MultipartLimitError(message, limit=kind)
        self.data.write(data)

    def add_to(self, form: Form) -> None:
        start, data = self.start, self.data.getvalue()
        if start.filename is not None:
            upload = FormFile(start.name, start.filename, start.content_type, data)
            form.files.setdefault(start.name, []).append(upload)
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError(f"field {start.name!r} is not valid UTF-8") from None
        form.fields.setdefault(start.name, []).append(text)


def size_text(count: int) -> str:
    """Bytes as people read them: '8 MB', '64 KB', '100 bytes' (binary units)."""
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= size:
            return f"{count / size:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{count} bytes"
