"""multipart/form-data: bodies as real clients send them, every split, limits, malformed input."""

from __future__ import annotations

import io
import time

import pytest

from isnet_wsgi.multipart import (
    NEED_DATA,
    BoundaryError,
    Epilogue,
    Form,
    FormFile,
    MultipartDecoder,
    MultipartError,
    MultipartLimitError,
    NotMultipartError,
    PartData,
    PartStart,
    boundary_from_content_type,
    read_form,
)

# NOTE: no CR at the end: with LF framing "...\r\n--boundary" reads as CRLF framing.
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01--\r\n-\n\r\x00"

# curl 8: curl -F file=@cat.png -F bg=white http://.../api/bg
CURL_CONTENT_TYPE = "multipart/form-data; boundary=------------------------d74496d66958873e"
CURL_BODY = (
    b"--------------------------d74496d66958873e\r\n"
    b'Content-Disposition: form-data; name="file"; filename="cat.png"\r\n'
    b"Content-Type: image/png\r\n"
    b"\r\n" + PNG_BYTES + b"\r\n"
    b"--------------------------d74496d66958873e\r\n"
    b'Content-Disposition: form-data; name="bg"\r\n'
    b"\r\n"
    b"white\r\n"
    b"--------------------------d74496d66958873e--\r\n"
)
CURL_FORM = Form(
    fields={"bg": ["white"]},
    files={"file": [FormFile("file", "cat.png", "image/png", PNG_BYTES)]},
)

# Chrome: a non-ASCII filename goes raw UTF-8, '"' goes as %22; an empty file input too.
CHROME_CONTENT_TYPE = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"
CHROME_BODY = (
    b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
    b'Content-Disposition: form-data; name="file"; filename="na\xc3\xafve %22x%22.png"\r\n'
    b"Content-Type: image/png\r\n"
    b"\r\n" + PNG_BYTES + b"\r\n"
    b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
    b'Content-Disposition: form-data; name="extra"; filename=""\r\n'
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"\r\n"
    b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
    b'Content-Disposition: form-data; name="size"\r\n'
    b"\r\n"
    b"preview\r\n"
    b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
    b'Content-Disposition: form-data; name="size"\r\n'
    b"\r\n"
    b"caf\xc3\xa9\r\nline two\r\n"
    b"------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n"
)
CHROME_FORM = Form(
    fields={"size": ["preview", "café\r\nline two"]},
    files={
        "file": [FormFile("file", "naïve %22x%22.png", "image/png", PNG_BYTES)],
        "extra": [FormFile("extra", "", "application/octet-stream", b"")],
    },
)

# Firefox (before 128): 27 dashes and digits; an empty text field.
FIREFOX_CONTENT_TYPE = (
    "multipart/form-data; boundary=---------------------------735323031399963166993862150"
)
FIREFOX_BODY = (
    b"-----------------------------735323031399963166993862150\r\n"
    b'Content-Disposition: form-data; name="bg_color"\r\n'
    b"\r\n"
    b"\r\n"
    b"-----------------------------735323031399963166993862150\r\n"
    b'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n"
    b"\r\n"
    b"\xff\xd8\xff\xe0JFIF\r\n\r\n\xff\xd9\r\n"
    b"-----------------------------735323031399963166993862150--\r\n"
)
FIREFOX_FORM = Form(
    fields={"bg_color": [""]},
    files={"file": [
        FormFile("file", "photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0JFIF\r\n\r\n\xff\xd9")
    ]},
)

# The same forms framed with bare LF, as some scripted clients send them.
# (Payloads keep their own CRLFs; only the framing changes.)
CURL_BODY_LF = (
    b"--------------------------d74496d66958873e\n"
    b'Content-Disposition: form-data; name="file"; filename="cat.png"\n'
    b"Content-Type: image/png\n"
    b"\n" + PNG_BYTES + b"\n"
    b"--------------------------d74496d66958873e\n"
    b'Content-Disposition: form-data; name="bg"\n'
    b"\n"
    b"white\n"
    b"--------------------------d74496d66958873e--\n"
)
FIREFOX_BODY_LF = (
    b"-----------------------------735323031399963166993862150\n"
    b'Content-Disposition: form-data; name="bg_color"\n'
    b"\n"
    b"\n"
    b"-----------------------------735323031399963166993862150\n"
    b'Content-Disposition: form-data; name="file"; filename="photo.jpg"\n'
    b"Content-Type: image/jpeg\n"
    b"\n"
    b"\xff\xd8\xff\xe0JFIF\r\n\r\n\xff\xd9\n"
    b"-----------------------------735323031399963166993862150--\n"
)

CLIENTS = {
    "curl": (CURL_CONTENT_TYPE, CURL_BODY, CURL_FORM),
    "chrome": (CHROME_CONTENT_TYPE, CHROME_BODY, CHROME_FORM),
    "firefox": (FIREFOX_CONTENT_TYPE, FIREFOX_BODY, FIREFOX_FORM),
    "curl-lf": (CURL_CONTENT_TYPE, CURL_BODY_LF, CURL_FORM),
    "firefox-lf": (FIREFOX_CONTENT_TYPE, FIREFOX_BODY_LF, FIREFOX_FORM),
}
BOUNDARY = b"------------------------d74496d66958873e"


def parse(body: bytes, boundary: bytes = BOUNDARY, **limits) -> Form:
    limits.setdefault("max_file_bytes", 1 << 20)
    return read_form(io.BytesIO(body).read, boundary, **limits)


class CountingReader:
    """A read(n) that returns at most `piece` bytes and counts what it handed out."""

    def __init__(self, body: bytes, piece: int | None = None) -> None:
        self.stream = io.BytesIO(body)
        self.piece = piece
        self.bytes_read = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(min(n, self.piece or n))
        self.bytes_read += len(data)
        return data


def form_data(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return f"Content-Disposition: {disposition}\r\n\r\n".encode() + value


def with_header_padding(part: bytes, pad_bytes: int) -> bytes:
    """The part with one more header line, ``pad_bytes`` long, in its header block."""
    return part.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * pad_bytes + b"\r\n\r\n", 1)


def body_of(*parts: bytes, boundary: bytes = BOUNDARY) -> bytes:
    delimiter = b"--" + boundary
    return b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"


# --- real clients -------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_parses_bodies_as_browsers_and_curl_send_them_crlf_or_lf(client):
    content_type, body, expected = CLIENTS[client]
    assert parse(body, boundary_from_content_type(content_type)) == expected


@pytest.mark.parametrize("client", CLIENTS)
def test_every_split_position_gives_the_same_form(client):
    content_type, body, expected = CLIENTS[client]
    boundary = boundary_from_content_type(content_type)
    for split in range(len(body) + 1):
        pieces = iter([piece for piece in (body[:split], body[split:]) if piece])  # b"" ends it
        form = read_form(lambda n: next(pieces, b""), boundary, max_file_bytes=1000)
        assert form == expected, split


@pytest.mark.parametrize("client", CLIENTS)
def test_one_byte_at_a_time_gives_the_same_form(client):
    content_type, body, expected = CLIENTS[client]
    reader = CountingReader(body, piece=1)
    boundary = boundary_from_content_type(content_type)
    assert read_form(reader.read, boundary, max_file_bytes=1000) == expected


def test_form_accessors_give_the_first_value_or_the_default():
    assert CHROME_FORM.field("size") == "preview"
    assert CHROME_FORM.field("missing") is None
    assert CHROME_FORM.field("missing", "white") == "white"
    assert CHROME_FORM.file("file").data == PNG_BYTES
    assert CHROME_FORM.file("size") is None


def test_preamble_epilogue_and_transport_padding_are_ignored():
    body = (
        b"This is a preamble.\r\n--" + BOUNDARY + b" \t\r\n" + form_data("a", b"1") + b"\r\n--"
        + BOUNDARY + b"--  \r\nThis is an epilogue, --" + BOUNDARY + b"\r\ngarbage"
    )
    assert parse(body) == Form(fields={"a": ["1"]})


def test_data_that_almost_matches_the_boundary_is_kept():
    value = b"\r\n--" + BOUNDARY[:-1] + b"X\r\n-" + b"\n--" + BOUNDARY[:10] + b"\r"
    assert parse(body_of(form_data("f", value, "x.bin"))).file("f").data == value


@pytest.mark.parametrize("disposition", [
    b"filename*=UTF-8''caf%E9.png",  # not UTF-8
    b"filename*=x-unknown''cat.png",  # a charset nobody knows
    b"filename*0*=UTF-8''ca; filename*1=t.png",  # RFC 2231 continuations
    b"filename*0=cat; filename*1*=%FF.png",
])
def test_a_filename_in_any_form_makes_a_file_part(disposition):
    # The data is not UTF-8: taken for a text field, this form would be refused.
    part = b'Content-Disposition: form-data; name="file"; ' + disposition + b"\r\n\r\n\x89PNG\xff"
    form = parse(body_of(part))
    assert form.fields == {}
    assert form.file("file").data == b"\x89PNG\xff"
    assert form.file("file").filename.endswith(".png")


def test_header_names_are_case_insensitive_and_extra_headers_kept():
    part = (
        b'content-disposition: FORM-DATA; NAME="a"; filename*=UTF-8\'\'na%C3%AFve.png\r\n'
        b"CONTENT-TYPE: image/png\r\nX-Extra:  yes \r\n\r\nxyz"
    )
    decoder = MultipartDecoder(BOUNDARY)
    decoder.receive_data(body_of(part))
    start = decoder.next_event()
    assert start == PartStart(
        name="a",
        filename="naïve.png",
        content_type="image/png",
        headers={
            "content-disposition": "FORM-DATA; NAME=\"a\"; filename*=UTF-8''na%C3%AFve.png",
            "content-type": "image/png",
            "x-extra": "yes",
        },
    )


# --- the decoder's events ------------------------------------------------------


def events_of(decoder: MultipartDecoder) -> list:
    events = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_decoder_emits_start_data_and_epilogue_then_need_data():
    decoder = MultipartDecoder(BOUNDARY)
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(body_of(form_data("a", b"hello"), form_data("b", b"", "")))
    assert events_of(decoder) == [
        PartStart("a", None, None, {"content-disposition": 'form-data; name="a"'}),
        PartData(b"hello", more=False),
        PartStart("b", "", None, {"content-disposition": 'form-data; name="b"; filename=""'}),
        PartData(b"", more=False),
        Epilogue(),
    ]
    decoder.receive_data(b"more epilogue")
    decoder.receive_data(None)
    assert decoder.next_event() is NEED_DATA


def test_decoder_holds_back_only_a_possible_partial_delimiter():
    decoder = MultipartDecoder(BOUNDARY)
    decoder.receive_data(b"--" + BOUNDARY + b"\r\n" + form_data("a", b"abc\r\n--" + BOUNDARY[:5]))
    assert events_of(decoder)[1:] == [PartData(b"abc", more=True)]
    decoder.receive_data(b"nope")  # not the boundary after all: the held bytes were data
    assert events_of(decoder) == [PartData(b"\r\n--" + BOUNDARY[:5] + b"nope", more=True)]
    decoder.receive_data(b"\r")
    assert events_of(decoder) == []
    decoder.receive_data(b"\n--" + BOUNDARY + b"--")
    assert events_of(decoder) == [PartData(b"", more=False), Epilogue()]


@pytest.mark.parametrize("client", CLIENTS)
def test_decoder_events_do_not_depend_on_where_the_input_is_split(client):
    content_type, body, _ = CLIENTS[client]
    boundary = boundary_from_content_type(content_type)

    def merged_events(pieces: list[bytes]) -> list:
        decoder, events = MultipartDecoder(boundary), []
        for piece in pieces:
            decoder.receive_data(piece)
            events += events_of(decoder)
        merged: list = []
        for event in events:
            if isinstance(event, PartData) and merged and isinstance(merged[-1], PartData):
                event = PartData(merged.pop().data + event.data, event.more)
            merged.append(event)
        return merged

    whole = merged_events([body])
    assert isinstance(whole[-1], Epilogue)
    for split in range(len(body) + 1):
        assert merged_events([body[:split], body[split:]]) == whole, split
    assert merged_events([body[i : i + 1] for i in range(len(body))]) == whole


def test_8_mb_file_in_64_kib_chunks_is_linear():
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    body = body_of(form_data("file", payload, "big.png"))
    framing_bytes = body.index(payload)  # the delimiter line and the part's headers
    decoder = MultipartDecoder(BOUNDARY)
    chunk_bytes, fed, emitted = 64 * 1024, 0, 0
    started = time.perf_counter()
    for offset in range(0, len(body), chunk_bytes):
        decoder.receive_data(body[offset : offset + chunk_bytes])
        fed += len(body[offset : offset + chunk_bytes])
        emitted += sum(len(e.data) for e in events_of(decoder) if isinstance(e, PartData))
        # Counting work: all but a possible partial delimiter is passed on at
        # once, so each search scans only the new chunk and a few held bytes.
        held_back = min(fed - framing_bytes, len(payload)) - emitted
        assert 0 <= held_back < len(b"\r\n--" + BOUNDARY), offset
    assert emitted == len(payload)
    assert parse(body, max_file_bytes=len(payload)).file("file").data == payload
    assert time.perf_counter() - started < 5


# --- limits --------------------------------------------------------------------


def test_file_over_its_limit_is_refused_before_the_body_is_read():
    body = body_of(form_data("file", b"x" * 1_000_000, "big.png"))
    reader = CountingReader(body)
    with pytest.raises(MultipartLimitError) as caught:
        read_form(reader.read, BOUNDARY, max_file_bytes=100_000, chunk_bytes=16 * 1024)
    assert caught.value.limit == "file"
    assert reader.bytes_read <= 100_000 + 2 * 16 * 1024


def test_file_exactly_at_its_limit_is_accepted():
    form = parse(body_of(form_data("f", b"x" * 1000, "a.png")), max_file_bytes=1000)
    assert form.file("f").data == b"x" * 1000


def test_field_over_its_limit_is_refused():
    body = body_of(form_data("bg", b"x" * 101))
    with pytest.raises(MultipartLimitError) as caught:
        parse(body, max_field_bytes=100)
    assert caught.value.limit == "field"
    assert parse(body, max_field_bytes=101).field("bg") == "x" * 101


def test_too_many_parts_are_refused():
    parts = [form_data(f"f{i}", b"v") for i in range(17)]
    assert len(parse(body_of(*parts[:16])).fields) == 16
    with pytest.raises(MultipartLimitError) as caught:
        parse(body_of(*parts))
    assert caught.value.limit == "parts"
    with pytest.raises(MultipartLimitError):
        parse(body_of(*parts[:3]), max_parts=2)


@pytest.mark.parametrize("piece", [None, 1, 1000])
def test_header_block_over_its_limit_is_refused(piece):
    reader = CountingReader(body_of(with_header_padding(form_data("a", b"v"), 9000)), piece=piece)
    with pytest.raises(MultipartLimitError) as caught:
        read_form(reader.read, BOUNDARY, max_file_bytes=10)
    assert caught.value.limit == "header"


def test_a_part_over_its_limit_is_named_by_its_kind():
    for filename, kind in ((None, "field"), ("a.png", "file")):
        body = body_of(form_data("a", b"x" * 70_000, filename))
        with pytest.raises(MultipartLimitError) as caught:
            read_form(io.BytesIO(body).read, BOUNDARY, max_file_bytes=3)
        assert caught.value.limit == kind


def test_limit_errors_are_multipart_errors_and_value_errors():
    assert issubclass(MultipartLimitError, MultipartError)
    assert issubclass(MultipartError, ValueError)


@pytest.mark.parametrize(("body", "limits", "code", "max_allowed"), [
    (body_of(form_data("file", b"x" * 11, "a.png")), {"max_file_bytes": 10}, "file_too_large", 10),
    (body_of(form_data("a", b"x" * 11)), {"max_field_bytes": 10}, "field_too_large", 10),
    (body_of(with_header_padding(form_data("a", b"v"), 9000)), {}, "part_headers_too_large", 8192),
    (body_of(*[form_data(f"f{i}", b"v") for i in range(17)]), {}, "too_many_parts", 16),
])
def test_each_limit_has_its_own_code_and_names_its_value(body, limits, code, max_allowed):
    with pytest.raises(MultipartLimitError) as caught:
        parse(body, **limits)
    assert (caught.value.code, caught.value.max_allowed) == (code, max_allowed)
    assert f"at most {max_allowed} " in str(caught.value)


# --- malformed bodies -------------------------------------------------------------

MALFORMED = {
    "empty body": b"",
    "garbage": b"\x00\xffnot multipart at all\r\n\r\n",
    "wrong boundary": CURL_BODY.replace(BOUNDARY, b"-----------------------other"),
    "no closing delimiter": CURL_BODY[: -len(b"--" + BOUNDARY + b"--\r\n")],
    "truncated in data": CURL_BODY[:150],
    "no content-disposition": body_of(b"Content-Type: text/plain\r\n\r\nx"),
    "no headers": body_of(b"\r\nx"),
    "no name": body_of(b'Content-Disposition: form-data; filename="a.png"\r\n\r\nx'),
    "not form-data": body_of(b'Content-Disposition: attachment; name="a"\r\n\r\nx'),
    "non-utf-8 field": body_of(form_data("a", b"caf\xe9")),
    "obsolete folding": body_of(b'Content-Disposition: form-data;\r\n name="a"\r\n\r\nx'),
    "cr in header": body_of(b'Content-Disposition: form-data; name="a"\rX-Evil: 1\r\n\r\nx'),
    "nul in header": body_of(b'Content-Disposition: form-data; name="a\x00"\r\n\r\nx'),
    "header without colon": body_of(form_data("a", b"x").replace(b"\r\n\r\n", b"\r\nnope\r\n\r\n")),
    "space before colon": body_of(b'Content-Disposition : form-data; name="a"\r\n\r\nx'),
    "duplicate header": body_of(
        b'Content-Disposition: form-data; name="a"\r\n'
        b'Content-Disposition: form-data; name="b"\r\n\r\nx'
    ),
    "junk after delimiter": body_of(form_data("a", b"x")).replace(b"\r\n", b"junk\r\n", 1),
    "headers never end": b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"\r\n',
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_bodies_are_refused(case):
    with pytest.raises(MultipartError) as caught:
        parse(MALFORMED[case])
    assert not isinstance(caught.value, MultipartLimitError)


def test_every_truncation_before_the_closing_delimiter_is_refused():
    closed_at = CURL_BODY.index(b"--" + BOUNDARY + b"--") + len(BOUNDARY) + 4
    for end in range(closed_at):
        with pytest.raises(MultipartError, match="end of body|no multipart boundary"):
            parse(CURL_BODY[:end])
    assert parse(CURL_BODY[:closed_at]) == CURL_FORM


# --- Content-Type and its parameters ---------------------------------------------------


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        (CURL_CONTENT_TYPE, BOUNDARY),
        (CHROME_CONTENT_TYPE, b"----WebKitFormBoundary7MA4YWxkTrZu0gW"),
        (
            'multipart/form-data; charset=utf-8; boundary="it\'s (a) b:o=u/n?d,a+r_y."',
            b"it's (a) b:o=u/n?d,a+r_y.",
        ),
        ("multipart/form-data; boundary=" + "b" * 70, b"b" * 70),
        # WebOb/webtest's style: outside RFC 2046's bchars, but printable.
        ("multipart/form-data; boundary=----------a_BoUnDaRy5$", b"----------a_BoUnDaRy5$"),
    ],
)
def test_boundary_from_content_type(header, boundary):
    assert boundary_from_content_type(header) == boundary


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "text/plain; boundary=abc",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "b" * 71,
        'multipart/form-data; boundary="trailing space "',
        "multipart/form-data; boundary=semi\x00colon",
        'multipart/form-data; boundary="na\u00efve"',
        'multipart/form-data; boundary="a\\"b"',
    ],
)
def test_boundary_from_content_type_refuses_bad_headers(header):
    with pytest.raises(MultipartError):
        boundary_from_content_type(header)


def test_a_missing_boundary_is_told_apart_from_another_media_type():
    with pytest.raises(NotMultipartError):
        boundary_from_content_type("application/json; boundary=abc")
    with pytest.raises(BoundaryError) as missing:
        boundary_from_content_type("multipart/form-data; charset=utf-8")
    assert missing.value.code == "missing_boundary"
    with pytest.raises(BoundaryError) as invalid:
        boundary_from_content_type("multipart/form-data; boundary=" + "b" * 71)
    assert invalid.value.code == "invalid_boundary"
