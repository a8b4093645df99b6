"""Properties of the multipart decoder over generated bodies (hypothesis)."""

from __future__ import annotations

import io
import re
from urllib.parse import quote

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from isnet_wsgi.web.headers import parse_options_header
from isnet_wsgi.web.multipart import (
    Form,
    FormFile,
    MultipartError,
    boundary_from_content_type,
    read_form,
)

SETTINGS = settings(max_examples=200, deadline=None)

# RFC 2046 bchars; a boundary may not end with a space.
BCHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=? "
boundaries = (
    st.text(BCHARS, min_size=1, max_size=70).map(str.encode).filter(lambda b: not b.endswith(b" "))
)
chunk_sizes = st.integers(min_value=1, max_value=64)
# Names go inside quotes: no quote, backslash or line break (browsers would %-encode them).
names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters='"\\\r\n\x00'), max_size=12
)


def payload_pieces(boundary: bytes):
    """Bytes a payload may hold that look like framing: partial delimiters, CR, LF, '--'."""
    delimiter = b"\r\n--" + boundary
    partial_delimiters = st.integers(1, len(delimiter) - 1).map(lambda n: delimiter[:n])
    framing_bytes = st.sampled_from([b"--", b"\r", b"\n", b"\r\n", b" "])
    return partial_delimiters | framing_bytes | st.binary(max_size=8)


def framing_pieces(boundary: bytes):
    """Payload-like bytes plus whole delimiters and header lines."""
    return payload_pieces(boundary) | st.sampled_from(
        [
            b"--" + boundary,
            b"\r\n--" + boundary,
            b"\r\n--" + boundary + b"--",
            b'Content-Disposition: form-data; name="a"',
            b'; filename="x.png"',
            b"Content-Type: image/png",
        ]
    )


@st.composite
def bodies(draw):
    """(boundary, body): arbitrary bytes, or bytes assembled from framing-like pieces."""
    boundary = draw(boundaries)
    assembled = st.lists(framing_pieces(boundary), max_size=30).map(b"".join)
    body = draw(st.binary(max_size=300) | assembled)
    return boundary, body


def reader(body: bytes, chunk_bytes: int):
    stream = io.BytesIO(body)
    return lambda n: stream.read(min(n, chunk_bytes))


def outcome(body: bytes, boundary: bytes, chunk_bytes: int):
    try:
        return read_form(
            reader(body, chunk_bytes), boundary, max_file_bytes=64, max_field_bytes=32, max_parts=4
        )
    except MultipartError as error:
        return type(error)


@SETTINGS
@given(bodies(), chunk_sizes)
def test_any_body_gives_a_form_or_a_multipart_error(boundary_and_body, chunk_bytes):
    boundary, body = boundary_and_body
    # Anything else escaping (IndexError, UnicodeError, ...) fails the test.
    result = outcome(body, boundary, chunk_bytes)
    event("form" if isinstance(result, Form) else result.__name__)
    assert isinstance(result, Form) or issubclass(result, MultipartError)
    # ... and the verdict does not depend on how the body arrives.
    assert outcome(body, boundary, 1 << 20) == result


def encode(boundary: bytes, fields: list[tuple[str, str]], files: list[FormFile]) -> bytes:
    """A minimal client: CRLF framing, fields then files."""
    parts = [
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
        for name, value in fields
    ] + [
        f'Content-Disposition: form-data; name="{f.name}"; filename="{f.filename}"\r\n'
        f"Content-Type: {f.content_type}\r\n\r\n".encode() + f.data
        for f in files
    ]
    delimiter = b"--" + boundary
    return b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"


@st.composite
def forms(draw):
    boundary = draw(boundaries)
    payloads = st.lists(payload_pieces(boundary), max_size=12).map(b"".join)
    values = st.text(max_size=20) | payloads.map(lambda payload: payload.decode("latin-1"))
    fields = draw(st.lists(st.tuples(names, values), max_size=4))
    files = draw(
        st.lists(
            st.builds(FormFile, names, names, st.sampled_from(["image/png", "text/plain"]), payloads),
            max_size=3,
        )
    )
    return boundary, fields, files


@SETTINGS
@given(forms(), chunk_sizes)
def test_an_encoded_form_parses_back_to_the_same_values(form, chunk_bytes):
    boundary, fields, files = form
    body = encode(boundary, fields, files)
    # A real client picks a boundary that its payloads do not contain.
    payloads = [value.encode() for _, value in fields] + [f.data for f in files]
    assume(not any(b"\n--" + boundary in payload for payload in payloads))
    parsed = read_form(
        reader(body, chunk_bytes), boundary, max_file_bytes=1 << 20, chunk_bytes=chunk_bytes
    )
    expected = Form()
    for name, value in fields:
        expected.fields.setdefault(name, []).append(value)
    for upload in files:
        expected.files.setdefault(upload.name, []).append(upload)
    assert parsed == expected


header_values = st.text(max_size=60) | st.lists(
    st.sampled_from(['multipart/form-data', ";", "=", '"', "\\", "*", "'", "%", " ", "boundary",
                     "filename", "UTF-8", "%C3%AF", "x", "*0", "*1*", "0", "%FF"]),
    max_size=20,
).map("".join)


@SETTINGS
@given(header_values)
def test_header_parsing_never_raises_anything_unexpected(value):
    mimetype, params = parse_options_header(value)
    assert mimetype == mimetype.lower() and all(key == key.lower() for key in params)
    try:
        boundary = boundary_from_content_type(value)
    except MultipartError:
        return
    assert 1 <= len(boundary) <= 70


@SETTINGS
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=16),
       st.lists(st.integers(min_value=0, max_value=100), max_size=4), chunk_sizes)
def test_a_filename_sent_as_continuations_parses_back(filename, cuts, chunk_bytes):
    # RFC 2231: percent-encoded UTF-8 split into numbered pieces anywhere
    # between escapes, so one character may straddle two pieces.
    escapes = re.findall(r"%[0-9A-F]{2}|.", quote(filename, safe=""))
    edges = sorted({0, len(escapes), *(cut % (len(escapes) + 1) for cut in cuts)})
    pieces = ["".join(escapes[start:end]) for start, end in zip(edges, edges[1:])] or [""]
    pieces[0] = "UTF-8''" + pieces[0]  # the charset, named once, in the first piece
    params = "; ".join(f"filename*{i}*={piece}" for i, piece in enumerate(pieces))
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; " + params.encode()
            + b"\r\n\r\n\xff\r\n--b--\r\n")
    form = read_form(reader(body, chunk_bytes), b"b", max_file_bytes=16, chunk_bytes=chunk_bytes)
    assert form.fields == {} and form.files["file"][0].filename == filename
