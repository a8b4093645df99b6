"""Every endpoint, driven in-process through webtest (which validates WSGI), on the real model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import webtest
from PIL import Image

from isnet_wsgi.pipeline import Output, split_file_name
from isnet_wsgi.service import Service, create_app
from tests.helpers import (
    encode_image,
    make_settings,
    multipart_body,
    open_image,
    photo_bytes,
)
from tests.test_image import tiny_file_declaring


def remove(client, data: bytes, filename: str = "photo.png", **kwargs):
    return client.post("/api/bg/remove", upload_files=[("file", filename, data)], **kwargs)


def change_color(client, data: bytes, color: str | None, filename="photo.png", *,
                 params: dict | None = None, **kwargs):
    params = dict(params or {}) | ({} if color is None else {"color": color})
    return client.post("/api/bg/change_color", params=params,
                       upload_files=[("file", filename, data)], **kwargs)


# --- Documentation and status ------------------------------------------------

def test_index_documents_every_endpoint_with_curl(client):
    page = client.get("/")
    assert page.content_type == "text/html"
    for path in ("/api/bg/health", "/api/bg/status", "/api/bg/remove",
                 "/api/bg/change_color", "/api/bg/clear_cache", "/openapi.json", "/metrics",
                 "/v1.0/removebg"):
        assert path in page.text
    assert "curl" in page.text and "-F file=@photo.jpg" in page.text


def test_openapi_lists_every_route(client, service):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item}
    assert documented == set(service.router.routes())


OPTIONS = {"/api/bg/remove": {"format", "mask", "crop", "margin", "max_dimension", "refine"},
           "/api/bg/change_color": {"format", "color", "blur", "max_dimension", "refine"}}


def test_openapi_and_the_page_document_every_option(client):
    document = client.get("/openapi.json").json
    page = client.get("/").text
    for path, names in OPTIONS.items():
        post = document["paths"][path]["post"]
        content = post["requestBody"]["content"]
        assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(content)
        fields = set(content["multipart/form-data"]["schema"]["properties"])
        assert names | {"file"} <= fields
        # The query's options are one object (style form, explode): the rules hold in it.
        (query,) = post["parameters"]
        assert (query["in"], query["style"], query["explode"]) == ("query", "form", True)
        assert names == set(query["schema"]["properties"])
        assert query["schema"]["additionalProperties"] is False
        assert "X-Cache" in post["responses"]["200"]["headers"]
        for name in names:
            assert f"<td><code>{name}</code></td>" in page
    assert "bg_file" in document["paths"]["/api/bg/change_color"]["post"]["requestBody"][
        "content"]["multipart/form-data"]["schema"]["properties"]
    assert "bg_file=@" in page and "--data-binary @photo.jpg" in page


def test_the_page_loads_nothing_from_outside(client):
    page = client.get("/").text
    assert 'id="file"' in page and "<script>" in page and "<style>" in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    assert len(page.encode()) < 32 * 1024


def test_health_is_healthy_with_memory(client):
    health = client.get("/api/bg/health").json
    assert health["status"] == "healthy"
    assert health["model_loaded"] is True
    assert 10 < health["memory_mb"] < 4096


def test_status_shows_model_limits_and_operator_facts(client, service):
    status = client.get("/api/bg/status").json
    assert status["status"] == "ready"
    assert status["model"] == "isnet-general-tiny"
    assert status["model_sha256"] == service.segmenter.sha256
    assert status["max_file_size_mb"] == 8
    assert status["max_dimension"] == 1024
    assert status["allowed_extensions"] == ["png", "jpg", "jpeg", "gif", "bmp", "tiff", "webp"]
    assert status["memory"]["model_loaded"] is True
    assert status["memory"]["peak_rss_mb"] >= status["memory"]["rss_mb"] > 0
    assert status["settings"]["api_key"] is None
    for key in ("version", "threads", "cpu_quota", "uptime_s", "requests_served", "worker_pid"):
        assert key in status


def test_head_answers_like_get_without_a_body(client):
    response = client.head("/api/bg/health")
    assert response.status_int == 200
    assert response.body == b""


# --- /api/bg/remove ----------------------------------------------------------

def test_remove_cuts_out_the_astronaut(client):
    response = remove(client, photo_bytes("astronaut.png"), "astronaut.png")
    assert response.content_type == "image/png"
    assert response.headers["Content-Disposition"] == 'attachment; filename="nobg_astronaut.png"'
    image = open_image(response.body)
    assert image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image.getchannel("A"))
    assert alpha[:40, :40].mean() < 10 and alpha[:40, -40:].mean() < 10  # sky corners
    assert alpha[40:120, 180:260].mean() > 240  # her face
    assert alpha[250:400, 100:250].mean() > 240  # her suit


def test_remove_keeps_the_colours_of_the_subject(client):
    original = open_image(photo_bytes("coffee.png")).convert("RGB")
    result = open_image(remove(client, photo_bytes("coffee.png"), "coffee.png").body)
    rgb = np.asarray(result.convert("RGB"), dtype=int)
    # Solid subject: rembg's truncation (which the service reproduces) leaves
    # most of it at 254, not 255, as the output's maximum is one pixel's.
    opaque = np.asarray(result.getchannel("A")) >= 250
    assert opaque.mean() > 0.2
    assert np.abs(rgb[opaque] - np.asarray(original, dtype=int)[opaque]).max() == 0


def test_remove_scales_a_large_image_to_the_long_side_limit(client):
    big = open_image(photo_bytes("coffee.png")).resize((2400, 1600))
    result = open_image(remove(client, encode_image(big, "JPEG"), "big.jpg").body)
    assert result.size == (1024, 683)


def test_remove_applies_exif_orientation_first(client):
    image = open_image(photo_bytes("coffee.png"))  # 600x400, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode_image(image, "JPEG", exif=exif.tobytes())
    assert open_image(remove(client, data, "rotated.jpg").body).size == (400, 600)


@pytest.mark.parametrize("image_format, extension", [
    ("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"),
    ("TIFF", "tiff"), ("WEBP", "webp")])
def test_remove_accepts_every_allowed_format(client, image_format, extension):
    data = encode_image(open_image(photo_bytes("astronaut.png")), image_format)
    result = open_image(remove(client, data, f"a.{extension}").body)
    assert result.mode == "RGBA" and result.size == (512, 512)


@pytest.mark.parametrize("disposition, expected", [
    ('filename="my photo.jpeg"', 'attachment; filename="nobg_my photo.png"'),
    # curl escapes a quote in a name as \"
    ('filename="evil\\".png"',
     "attachment; filename=\"nobg_evil_.png\"; filename*=UTF-8''nobg_evil%22.png"),
    # browsers percent-encode CR, LF and quotes in filename; kept as sent
    ('filename="a%0D%0ASet-Cookie: x=1.png"',
     'attachment; filename="nobg_a_0D_0ASet-Cookie_ x_1.png"; '
     "filename*=UTF-8''nobg_a%250D%250ASet-Cookie%3A%20x%3D1.png"),
    # RFC 5987 can carry a real CR LF; it must still never reach the header raw
    ("filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1.png",
     'attachment; filename="nobg_a_Set-Cookie_ x_1.png"; '
     "filename*=UTF-8''nobg_a%0D%0ASet-Cookie%3A%20x%3D1.png"),
    ('filename="../../etc/passwd.png"', 'attachment; filename="nobg_passwd.png"'),
    ('filename="C:\\Users\\me\\cat.png"', 'attachment; filename="nobg_cat.png"'),
    ("filename*=UTF-8''caf%C3%A9.png",
     "attachment; filename=\"nobg_cafe.png\"; filename*=UTF-8''nobg_caf%C3%A9.png"),
])
def test_remove_names_the_download_safely(client, disposition, expected):
    body, content_type = multipart_body(
        photo_bytes("camera.png"), "", disposition=f'form-data; name="file"; {disposition}')
    response = client.request("/api/bg/remove", method="POST", body=body,
                              content_type=content_type)
    assert response.status_int == 200
    assert response.headers["Content-Disposition"] == expected


# --- /api/bg/change_color ----------------------------------------------------

@pytest.mark.parametrize("color, rgb", [
    ("#00FF00", (0, 255, 0)), ("#00f", (0, 0, 255)), ("255, 0, 0", (255, 0, 0)),
    (None, (255, 255, 255))])
def test_change_color_puts_the_subject_on_the_colour(client, color, rgb):
    response = change_color(client, photo_bytes("astronaut.png"), color)
    assert response.content_type == "image/jpeg"
    image = open_image(response.body)
    assert image.mode == "RGB" and image.size == (512, 512)
    corner = np.asarray(image, dtype=int)[:32, :32].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - rgb).max() < 12
    face = np.asarray(image, dtype=int)[120:160, 220:260].reshape(-1, 3).mean(axis=0)
    assert np.abs(face - rgb).max() > 60  # the subject is not painted over


@pytest.mark.parametrize("color", ["green", "#12345", "256,0,0", "1,2", "#GGGGGG", "#fff;x"])
def test_change_color_refuses_a_bad_colour(client, color):
    response = change_color(client, photo_bytes("camera.png"), color, status=400)
    assert response.json["error"] == "invalid_color"


# --- /api/bg/clear_cache -----------------------------------------------------

def test_clear_cache_reports_memory_before_and_after(client):
    answer = client.post("/api/bg/clear_cache").json
    assert answer["status"] == "cleared"
    assert answer["memory_before_mb"] > 0 and answer["memory_after_mb"] > 0
    assert "gc_objects" in answer["cleared"]


# --- Errors ------------------------------------------------------------------

def test_unknown_path_is_a_json_404(client):
    response = client.get("/nope?x=%zz&&=", status=404)
    assert response.json["error"] == "not_found"


def test_wrong_method_is_405_with_allow(client):
    response = client.get("/api/bg/remove", status=405)
    assert response.headers["Allow"] == "POST"
    assert response.json["error"] == "method_not_allowed"
    assert client.delete("/api/bg/health", status=405).headers["Allow"] == "GET, HEAD"


def test_not_multipart_is_415(client):
    response = client.post("/api/bg/remove", params=b"{}", content_type="application/json",
                           status=415)
    assert response.json["error"] == "not_multipart"


def test_missing_file_is_400(client):
    response = client.post("/api/bg/remove", params={"color": "#fff"},
                           content_type="multipart/form-data", status=400)
    assert response.json["error"] == "missing_file"


def test_two_files_are_400(client):
    data = photo_bytes("camera.png")
    response = client.post("/api/bg/remove", upload_files=[
        ("file", "a.png", data), ("file", "b.png", data)], status=400)
    assert response.json["error"] == "too_many_files"


def test_wrong_extension_is_415(client):
    response = remove(client, photo_bytes("camera.png"), "camera.exe", status=415)
    assert response.json["error"] == "unsupported_extension"


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "invalid_image"),
    (b"this is not an image at all", 415, "unsupported_image"),
    (photo_bytes("coffee.png")[:5000], 400, "invalid_image"),
    (photo_bytes("hubble_deep_field.jpg")[:3000], 400, "invalid_image"),
])
def test_bad_image_bytes_are_a_clear_4xx(client, data, status, code):
    response = remove(client, data, "x.png", status=status)
    assert response.json["error"] == code


def test_a_format_outside_the_allowed_list_is_415(client):
    # ICO is a format Pillow reads, but not one this service accepts.
    data = encode_image(open_image(photo_bytes("camera.png")).resize((64, 64)), "ICO")
    response = remove(client, data, "icon.png", status=415)
    assert response.json["error"] == "unsupported_image"


def test_oversized_upload_is_413(client, settings):
    data = b"\0" * (settings.max_upload_bytes + 1)
    response = remove(client, data, "big.png", status=413)
    assert response.json["error"] in ("file_too_large", "body_too_large")


def test_decompression_bomb_is_refused_from_its_header(client):
    bomb = tiny_file_declaring("PNG", 40000, 40000)
    response = remove(client, bomb, "bomb.png", status=413)
    assert response.json["error"] == "image_too_large"


# --- A service whose model is not usable ----------------------------------------

def test_unstarted_model_makes_health_503_and_requests_503(settings):
    unstarted = webtest.TestApp(create_app(settings))
    health = unstarted.get("/api/bg/health", status=503).json
    assert health["status"] == "unhealthy" and health["model_loaded"] is False
    assert health["reason"]
    response = remove(unstarted, photo_bytes("camera.png"), status=503)
    assert response.json["error"] == "model_unavailable"
    assert response.headers["Retry-After"]


# --- API key -------------------------------------------------------------------

def test_api_key_guards_the_post_endpoints_but_not_health(service):
    client = webtest.TestApp(Service(make_settings(api_key="s3cret"), service.segmenter))
    assert client.get("/api/bg/health").json["status"] == "healthy"
    for path in ("/api/bg/remove", "/api/bg/change_color", "/api/bg/clear_cache"):
        response = client.post(path, status=401)
        assert response.json["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    client.post("/api/bg/clear_cache", headers={"Authorization": "Bearer wrong"}, status=401)
    answer = remove(client, photo_bytes("camera.png"),
                    headers={"Authorization": "Bearer s3cret"})
    assert answer.content_type == "image/png"


# --- Each malformed or over-limit form named for what is wrong (issue 12) ---------

def post_form(client, path: str, body: bytes, content_type: str, **kwargs):
    return client.request(path, method="POST", body=body, content_type=content_type, **kwargs)


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; charset=utf-8", "Multipart/Form-Data;"])
def test_a_form_without_a_boundary_is_400_not_415(client, content_type):
    body, _ = multipart_body(photo_bytes("camera.png"), "camera.png")
    response = post_form(client, "/api/bg/remove", body, content_type, status=400)
    assert response.json["error"] == "missing_boundary"
    response = post_form(client, "/api/bg/remove", body,
                         "multipart/form-data; boundary=" + "b" * 71, status=400)
    assert response.json["error"] == "invalid_boundary"


def test_each_form_limit_is_a_413_naming_that_limit(client):
    data = photo_bytes("camera.png")
    many_fields = {f"f{i}": "v" for i in range(16)}  # with the file: 17 parts
    cases = [
        (multipart_body(data, "c.png", many_fields), "too_many_parts", "at most 16 parts"),
        (multipart_body(data, "c.png", disposition='form-data; name="file"; filename="c.png"; x="'
                        + "p" * 9000 + '"'), "part_headers_too_large", "at most 8192 bytes"),
        (multipart_body(data, "c.png", {"color": "x" * (64 * 1024 + 1)}), "field_too_large",
         "at most 64 KB"),
    ]
    for (body, content_type), code, limit in cases:
        response = post_form(client, "/api/bg/remove", body, content_type, status=413)
        assert response.json["error"] == code
        assert limit in response.json["message"] and "MB" not in response.json["message"]


def test_a_file_over_the_limit_is_413_naming_the_file_limit(service):
    small = webtest.TestApp(Service(make_settings(max_upload_mb=0.01), service.segmenter))
    body, content_type = multipart_body(b"\0" * 20_000, "big.png")
    response = post_form(small, "/api/bg/remove", body, content_type, status=413)
    assert response.json["error"] == "file_too_large"
    assert "at most 10.24 KB (MAX_UPLOAD_MB=0.01)" in response.json["message"]


@pytest.mark.parametrize("disposition, expected", [
    # Not UTF-8, with no plain filename to fall back on: the bad byte replaced.
    ("filename*=UTF-8''caf%E9.png",
     "attachment; filename=\"nobg_caf.png\"; filename*=UTF-8''nobg_caf%EF%BF%BD.png"),
    # Not UTF-8, with a plain one: that one.
    ("filename*=UTF-8''caf%E9.png; filename=\"cafe.png\"", 'attachment; filename="nobg_cafe.png"'),
    # RFC 2231 continuations, joined and decoded; a CR LF in them still never raw.
    ("filename*0*=UTF-8''a%0D%0ASet-; filename*1=\"Cookie: x=1.png\"",
     'attachment; filename="nobg_a_Set-Cookie_ x_1.png"; '
     "filename*=UTF-8''nobg_a%0D%0ASet-Cookie%3A%20x%3D1.png"),
])
def test_a_filename_in_any_form_is_a_file_named_safely(client, disposition, expected):
    body, content_type = multipart_body(
        photo_bytes("camera.png"), "", disposition=f'form-data; name="file"; {disposition}')
    response = post_form(client, "/api/bg/remove", body, content_type)
    assert response.status_int == 200 and response.content_type == "image/png"
    assert response.headers["Content-Disposition"] == expected


def test_a_file_field_sent_as_text_is_400_not_ignored(client):
    data = photo_bytes("camera.png")
    response = client.post("/api/bg/change_color", params={"bg_file": "beach.jpg"},
                           upload_files=[("file", "c.png", data)], status=400)
    assert response.json["error"] == "bg_file_not_a_file"
    assert "file part" in response.json["message"]
    response = client.post("/api/bg/change_color?bg_file=beach.jpg", params=data,
                           content_type="image/png", status=400)
    assert response.json["error"] == "bg_file_not_a_file"
    response = client.post("/api/bg/remove", params={"file": "photo.jpg"},
                           content_type="multipart/form-data", status=400)
    assert response.json["error"] == "file_not_a_file"
    response = client.post("/api/bg/remove?file=photo.jpg", params=data,
                           content_type="image/png", status=400)
    assert response.json["error"] == "file_not_a_file"


def test_the_page_writes_defaults_as_a_client_sends_them(client):
    page = client.get("/").text
    assert "<td>false</td>" in page and "<td>False</td>" not in page


def test_openapi_documents_every_setting_that_status_shows(client):
    schema = client.get("/openapi.json").json["components"]["schemas"]["Settings"]
    shown = client.get("/api/bg/status").json["settings"]
    assert set(schema["properties"]) == set(shown)
    port = schema["properties"]["port"]
    assert (port["type"], port["default"], port["minimum"], port["maximum"]) == (
        "integer", 5000, 1, 65535)
    assert "PORT" in port["description"]


@pytest.mark.parametrize("sent, extension, saved", [
    ("C:\\Users\\me\\Photo.PNG", "png", "nobg_Photo.png"), ("../../etc/cat.jpg", "jpg", "nobg_cat.png"),
    ("D:drive-relative.webp", "webp", "nobg_drive-relative.png"), (".png", "", "nobg_.png.png"),
    ("noext", "", "nobg_noext.png")])
def test_a_client_file_name_is_split_the_same_way_for_checks_and_downloads(sent, extension, saved):
    stem, found = split_file_name(sent)
    assert found == extension
    output = Output(b"", "image/png", "nobg", "png")
    assert output.file_name(sent) == saved
