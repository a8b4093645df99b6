"""Incremental multipart/form-data decoder (RFC 7578, RFC 2046).

``MultipartDecoder`` does no I/O: feed it bytes with ``receive_data`` and pull
events with ``next_event`` until it answers ``NEED_DATA``. ``read_form`` drives
it from a blocking ``read(n)`` and collects a ``Form``, enforcing the per-part
size limits while the body streams in.

A malformed body raises ``MultipartError`` (the app answers 400); a body over
a limit raises ``MultipartLimitError`` (413). Nothing is ever silently dropped.
"""

from __future__ import annotations

import codecs
import enum
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from urllib.parse import unquote


class MultipartError(ValueError):
    """The body is not valid multipart/form-data. The app answers 400."""


class MultipartLimitError(MultipartError):
    """A size/count limit was exceeded. The app answers 413.
    ``limit`` names which: 'file', 'field', 'header', 'parts' or 'body'."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


# --- header parameters ------------------------------------------------------

# "; key" optionally followed by "= value", the value being a quoted string
# (possibly unterminated: junk must not raise) or anything up to the next ";".
_PARAM_RE = re.compile(r';\s*([^\s;=]+)\s*(?:=\s*("(?:\\.|[^"\\])*"?|[^;]*))?')
# NOTE: only \" and \\ are unescaped. Browsers do not escape backslashes in
# filenames (a Windows path arrives as "C:\Users\x.png"); unescaping every
# quoted-pair would silently eat them.
_QUOTED_PAIR_RE = re.compile(r'\\([\\"])')


def parse_options_header(value: str | None) -> tuple[str, dict[str, str]]:
    """Split 'type/sub; key=value; ...' into the lower-cased type and its params.

    Keys are lower-cased, quoted values unquoted, and RFC 2231/5987 extended
    values (``filename*=UTF-8''na%C3%AFve.png``) decoded and preferred over the
    plain ones. The first occurrence of a key wins. Never raises on junk.
    """
    if not value:
        return "", {}
    mimetype, semicolon, rest = value.partition(";")
    plain: dict[str, str] = {}
    extended: dict[str, str] = {}  # key* values, which win over plain ones
    for match in _PARAM_RE.finditer(semicolon + rest):
        key, raw = match.group(1).lower(), (match.group(2) or "").strip()
        if key.endswith("*"):
            decoded = _decode_extended_value(raw)
            if decoded is not None:
                extended.setdefault(key[:-1], decoded)
        else:
            plain.setdefault(key, _unquote(raw))
    return mimetype.strip().lower(), {**plain, **extended}


# RFC 5987 allows these two; ASCII is a subset of both.
_EXTENDED_CHARSETS = {"utf-8", "iso8859-1", "ascii"}


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    inner = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else raw[1:]
    return _QUOTED_PAIR_RE.sub(r"\1", inner)


def _decode_extended_value(raw: str) -> str | None:
    """charset'language'percent-encoded -> str; None when it cannot be decoded."""
    charset, _, rest = _unquote(raw).partition("'")
    _language, quote, encoded = rest.partition("'")
    try:
        if not quote or codecs.lookup(charset).name not in _EXTENDED_CHARSETS:
            return None
        return unquote(encoded, encoding=charset, errors="strict")
    except (LookupError, UnicodeDecodeError):
        return None


# RFC 2046 allows only its bchars, but real clients stray outside them (WebOb
# and webtest send "$"), so accept any printable ASCII but the quote, 1 to 70
# characters, not ending with a space. Control bytes and CR/LF stay refused.
_BOUNDARY_RE = re.compile(rb"[\x20-\x21\x23-\x7e]{0,69}[\x21\x23-\x7e]")


def _check_boundary(boundary: bytes) -> bytes:
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise MultipartError(f"invalid multipart boundary {boundary!r}")
    return boundary


def boundary_from_content_type(value: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, as bytes."""
    mimetype, params = parse_options_header(value)
    if mimetype != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {mimetype or 'nothing'!r}")
    if "boundary" not in params:
        raise MultipartError("multipart/form-data without a boundary")
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

    def __init__(self, boundary: bytes, *, max_part_bytes: int | None = None,
                 max_header_bytes: int = 8192, max_parts: int | None = 16) -> None:
        # Every delimiter but the first follows a line break: searching for
        # "\n--boundary" finds them all, and a CR before it is the CRLF's.
        self._delimiter = b"\n--" + _check_boundary(boundary)
        # NOTE: the body starts at the start of a line, so a virtual CRLF in
        # front lets a first delimiter at offset 0 match that same pattern.
        self._buffer = bytearray(b"\r\n")
        self._state = _State.PREAMBLE
        self._end_of_input = False
        self._max_part_bytes, self._max_header_bytes = max_part_bytes, max_header_bytes
        self._max_parts, self._part_count = max_parts, 0
        self._part_bytes, self._part_is_file = 0, False  # of the part being read
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
            raise MultipartLimitError(f"more than {self._max_parts} parts", limit="parts")
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
            message = f"part headers over {self._max_header_bytes} bytes"
            raise MultipartLimitError(message, limit="header")
        if line_end == -1:
            return self._need_data()
        event = _part_start(_parse_header_lines(bytes(buffer[:line_start])))
        del buffer[: self._header_scan]
        self._state, self._part_bytes = _State.DATA, 0
        self._part_is_file = event.filename is not None
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
        self._part_bytes += end
        if self._max_part_bytes is not None and self._part_bytes > self._max_part_bytes:
            kind = "file" if self._part_is_file else "field"
            message = f"a {kind} is larger than {self._max_part_bytes} bytes"
            raise MultipartLimitError(message, limit=kind)
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

    def field(self, name: str, default: str | None = None) -> str | None:
        """The first value of text field ``name``."""
        values = self.fields.get(name)
        return values[0] if values else default

    def file(self, name: str) -> FormFile | None:
        """The first file sent as ``name``."""
        files = self.files.get(name)
        return files[0] if files else None


def read_form(read: Callable[[int], bytes], boundary: bytes, *, max_file_bytes: int,
              max_field_bytes: int = 64 * 1024, max_parts: int = 16,
              chunk_bytes: int = 64 * 1024) -> Form:
    """Read a whole multipart/form-data body from ``read(n)`` (b'' at its end).

    A part over its limit raises MultipartLimitError as soon as it passes it,
    without reading the rest, so memory stays within the limits. Reading
    stops at the closing delimiter.
    """
    decoder = MultipartDecoder(boundary, max_parts=max_parts)
    form, part = Form(), None
    while not isinstance(event := decoder.next_event(), Epilogue):
        if isinstance(event, NeedData):
            decoder.receive_data(read(chunk_bytes) or None)
        elif isinstance(event, PartStart):
            is_file = event.filename is not None
            part = _PartCollector(event, max_file_bytes if is_file else max_field_bytes)
        elif part is not None:  # always: a PartData follows its PartStart
            part.write(event.data)
            if not event.more:
                part.add_to(form)
    return form


class _PartCollector:
    """One part's data, refused as soon as it passes its limit."""

    def __init__(self, start: PartStart, max_bytes: int) -> None:
        self.start, self.max_bytes = start, max_bytes
        self.data = io.BytesIO()  # PERF: getvalue() hands over its buffer without a copy

    def write(self, data: bytes) -> None:
        if self.data.tell() + len(data) > self.max_bytes:
            kind = "file" if self.start.filename is not None else "field"
            message = f"{kind} {self.start.name!r} is larger than {self.max_bytes} bytes"
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
