"""Bodies for the multipart tests: captured from real clients, and builders."""

from __future__ import annotations

import io

from isnet_wsgi.web.multipart import (
    Form,
    FormFile,
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
