"""The bench builds each request before its clock starts; what it sends is a
form each server reads back as the photo it was given."""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path

import pytest

from bench.servers import OurService, Rembg, Removal
from isnet_wsgi.web.multipart import boundary_from_content_type, read_form

PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def _form(removal: Removal):
    body = io.BytesIO(removal.body)
    return read_form(body.read, boundary_from_content_type(removal.content_type),
                     max_file_bytes=1 << 20)


def test_our_removal_posts_the_photo_as_the_file_field(tmp_path):
    server = OurService.create(Path("model.onnx"), tmp_path)
    removal = server.removal("coffee.png", PHOTO)
    assert removal.path == "/api/bg/remove"
    [upload] = _form(removal).files["file"]
    assert (upload.filename, upload.data) == ("coffee.png", PHOTO)


def test_rembgs_removal_names_its_model_file(tmp_path):
    server = Rembg.create(tmp_path / "isnet.onnx", tmp_path)
    removal = server.removal("coffee.png", PHOTO)
    path, _, query = removal.path.partition("?")
    assert path == "/api/remove"
    extras = json.loads(urllib.parse.parse_qs(query)["extras"][0])
    assert extras == {"model_path": str(tmp_path / "isnet.onnx")}
    form = _form(removal)
    assert form.fields["model"] == ["dis_custom"]
    assert form.files["file"][0].data == PHOTO


def test_a_prepared_removal_is_sent_as_built(tmp_path, monkeypatch):
    server = OurService.create(Path("model.onnx"), tmp_path)
    removal = server.removal("coffee.png", PHOTO)
    sent = []

    def request(method, path, body=None, headers=None, timeout_s=0):
        sent.append((method, path, body, headers))
        return 200, b"answer"

    monkeypatch.setattr(server, "request", request)
    assert server.send(removal) == b"answer"
    assert sent == [("POST", "/api/bg/remove", removal.body,
                     {"Content-Type": removal.content_type})]


def test_an_answer_other_than_200_stops_the_bench(tmp_path, monkeypatch):
    server = OurService.create(Path("model.onnx"), tmp_path)
    monkeypatch.setattr(server, "request", lambda *args, **kwargs: (415, b'{"error": "x"}'))
    with pytest.raises(RuntimeError, match="isnet-wsgi answered 415"):
        server.send(server.removal("coffee.png", PHOTO))
