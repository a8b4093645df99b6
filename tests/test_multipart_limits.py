"""multipart/form-data: limits, malformed bodies, and the Content-Type's boundary."""

from __future__ import annotations

import io

import pytest

from isnet_wsgi.web.multipart import (
    BoundaryError,
    MultipartError,
    MultipartLimitError,
    NotMultipartError,
    boundary_from_content_type,
    read_form,
)
from tests.multipart_bodies import (
    BOUNDARY,
    CHROME_CONTENT_TYPE,
    CURL_BODY,
    CURL_CONTENT_TYPE,
    CURL_FORM,
    CountingReader,
    body_of,
    form_data,
    parse,
    with_header_padding,
)

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
    assert form.files["f"][0].data == b"x" * 1000


def test_field_over_its_limit_is_refused():
    body = body_of(form_data("bg", b"x" * 101))
    with pytest.raises(MultipartLimitError) as caught:
        parse(body, max_field_bytes=100)
    assert caught.value.limit == "field"
    assert parse(body, max_field_bytes=101).fields["bg"] == ["x" * 101]


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
    assert caught.value.code == code
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
