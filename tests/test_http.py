"""Request/Response helpers: bounded body reading and safe download names."""

import io

import pytest

from isnet_wsgi.web.errors import BadRequest, PayloadTooLarge
from isnet_wsgi.web.http import Request, attachment_header
from isnet_wsgi.web.response import Response


def request_with(body: bytes, content_length: str | None) -> Request:
    environ = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body)}
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    return Request(environ)


def read_all(reader, size=7):
    chunks = []
    while chunk := reader.read(size):
        chunks.append(chunk)
    return b"".join(chunks)


def test_body_reader_stops_at_content_length():
    reader = request_with(b"hello world", "5").body_reader(max_bytes=100)
    assert read_all(reader) == b"hello"


def test_declared_length_over_the_limit_is_413_before_reading():
    stream = io.BytesIO(b"x" * 10)
    request = Request({"REQUEST_METHOD": "POST", "wsgi.input": stream, "CONTENT_LENGTH": "50000000"})
    with pytest.raises(PayloadTooLarge):
        request.body_reader(max_bytes=1000)
    assert stream.tell() == 0


def test_undeclared_length_is_cut_off_while_streaming():
    reader = request_with(b"x" * 5000, None).body_reader(max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        read_all(reader, size=100)
    assert reader.bytes_read <= 1100


@pytest.mark.parametrize("junk", ["abc", "-1", "1e3", "12 34"])
def test_junk_content_length_is_400(junk):
    with pytest.raises(BadRequest):
        request_with(b"", junk).body_reader(max_bytes=10)


def test_json_response_has_length_and_type():
    response = Response.json({"a": 1}, status=201)
    assert response.status_line == "201 Created"
    assert ("Content-Length", "7") in response.wsgi_headers()
    assert response.header("content-type") == "application/json"


@pytest.mark.parametrize("name", ['a"b.png', "a\r\nb.png", "a;b.png", "名前.png", "\\..\\x.png", ""])
def test_attachment_header_is_always_safe_ascii(name):
    value = attachment_header(name)
    value.encode("ascii")
    assert "\r" not in value and "\n" not in value
    plain = value.split('filename="', 1)[1].split('"', 1)[0]
    assert '"' not in plain and ";" not in plain and "\\" not in plain


def test_a_content_length_in_other_digits_is_a_400_not_a_500():
    # "²".isdigit() is True but int("²") raises: one rule for numbers, ASCII only.
    for junk in ("²", "１２", "1_0", "-1"):
        request = Request({"CONTENT_LENGTH": junk, "wsgi.input": io.BytesIO(b"")})
        with pytest.raises(BadRequest):
            request.content_length
