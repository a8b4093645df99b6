"""What the pool must know of a request's bytes before gunicorn parses them.

I/O-free: where the head ends, how long the body it declares is (or that it
streams), and a complete answer on the wire for answers sent outside the
app. gunicorn's parser still judges every request: a head these functions
cannot read is handed over for it to refuse.
"""

from __future__ import annotations

from ..web.response import Response

# A head longer than this is handed over unfinished: gunicorn's parser
# refuses it (431, 414) or reads the rest under the head deadline.
HEAD_BUFFER_BYTES = 64 * 1024


# The interim answer a client that sent ``Expect: 100-continue`` waits for.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def declared_body_bytes(head: bytes) -> int | None:
    """The body's length when the head declares exactly one plain
    ``Content-Length`` (0 when none); None when the body must stream
    (chunked) or the framing is gunicorn's to refuse (an odd ``Expect``)."""
    lengths = []
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if colon and name == b"transfer-encoding":
            return None
        if colon and name == b"expect" and value.strip().lower() != b"100-continue":
            return None
        if colon and name == b"content-length":
            lengths.append(value.strip())
    if not lengths:
        return 0
    if len(lengths) != 1 or not lengths[0].isdigit():
        return None
    return int(lengths[0])


def without_expect_continue(head: bytes) -> bytes | None:
    """The head without its ``Expect: 100-continue`` line, when a HTTP/1.1
    head has one (the pool then answers ``CONTINUE`` itself, and gunicorn,
    seeing no expectation, sends no second one); None when it has none."""
    lines = head.split(b"\n")
    if not lines[0].rstrip(b"\r").endswith(b" HTTP/1.1"):
        return None  # HTTP/1.0: the expectation is ignored (RFC 9110 10.1.1)
    kept = [lines[0]] + [line for line in lines[1:] if not _expects_continue(line)]
    return b"\n".join(kept) if len(kept) < len(lines) else None


def _expects_continue(line: bytes) -> bool:
    name, colon, value = line.partition(b":")
    return (bool(colon) and name.strip().lower() == b"expect"
            and value.strip().lower() == b"100-continue")


def head_end(data: bytearray) -> int | None:
    """Where the head ends (after its blank line), if it has; a bare-LF blank
    line counts too, for gunicorn to refuse at once rather than at the deadline."""
    ends = [found + len(mark) for mark in (b"\r\n\r\n", b"\n\n")
            if (found := data.find(mark, 0, HEAD_BUFFER_BYTES + len(mark))) >= 0]
    return min(ends) if ends else None


def raw_response(response: Response) -> bytes:
    """A complete HTTP/1.1 response on the wire, for answers sent outside the app."""
    lines = [f"HTTP/1.1 {response.status_line}",
             *(f"{name}: {value}" for name, value in response.wsgi_headers()),
             "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + response.body
