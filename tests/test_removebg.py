"""POST /v1.0/removebg speaks remove.bg's API: its parameters, answers,
headers and error shape, on the real model (in-process, through webtest)."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
import webtest

from isnet_wsgi.service import Service
from tests.helpers import make_settings, open_image, photo_bytes

PATH = "/v1.0/removebg"
PHOTO = photo_bytes("astronaut.png")  # 512 x 512: over preview's 0.25 MP


def post_file(client, fields=None, *, data=PHOTO, status=200, headers=None):
    return client.post(PATH, params=fields or {}, upload_files=[("image_file", "a.png", data)],
                       headers=headers or {}, status=status)


def removebg_error(response, status: int, code: str) -> str:
    assert response.status_int == status
    (error,) = response.json["errors"]
    assert error["code"] == code and error["title"]
    return error["title"]


def test_a_file_becomes_a_cutout_within_previews_pixels_with_remove_bgs_headers(client):
    response = post_file(client)
    image = open_image(response.body)
    assert response.content_type == "image/png" and image.mode == "RGBA"
    # preview (the default) is at most 0.25 MP: 512 x 512 comes back 500 x 500.
    assert image.width * image.height <= 250_000 and image.size == (500, 500)
    assert (response.headers["X-Width"], response.headers["X-Height"]) == ("500", "500")
    alpha = np.asarray(image.getchannel("A"))
    rows, cols = np.nonzero(alpha > 16)
    assert int(response.headers["X-Foreground-Top"]) == rows.min()
    assert int(response.headers["X-Foreground-Left"]) == cols.min()
    assert int(response.headers["X-Foreground-Height"]) == rows.max() + 1 - rows.min()
    assert int(response.headers["X-Foreground-Width"]) == cols.max() + 1 - cols.min()


def test_full_size_keeps_the_image_within_max_dimension(client, settings):
    image = open_image(post_file(client, {"size": "full"}).body)
    assert image.size == (512, 512) and max(image.size) <= settings.max_dimension_px


def test_base64_in_json_answers_json_when_asked(client):
    body = {"image_file_b64": base64.b64encode(PHOTO).decode(), "size": "preview",
            "crop": False, "type": "person", "scale": "original"}
    response = client.post_json(PATH, body, headers={"Accept": "application/json"})
    data = response.json["data"]
    image = open_image(base64.b64decode(data["result_b64"]))
    assert image.size == (500, 500) and image.mode == "RGBA"
    assert data["foreground_top"] == int(response.headers["X-Foreground-Top"])
    assert data["foreground_width"] == int(response.headers["X-Foreground-Width"])


def test_base64_in_a_urlencoded_form(client):
    response = client.post(PATH, {"image_file_b64": base64.b64encode(PHOTO).decode(),
                                  "channels": "alpha"})
    assert open_image(response.body).mode == "L"


def test_zip_holds_color_jpg_and_alpha_png_of_one_size(client):
    response = post_file(client, {"format": "zip", "crop": "true"})
    assert response.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        color = open_image(archive.read("color.jpg"))
        alpha = open_image(archive.read("alpha.png"))
    assert color.format == "JPEG" and color.mode == "RGB" and alpha.mode == "L"
    assert color.size == alpha.size
    assert color.size == (int(response.headers["X-Width"]), int(response.headers["X-Height"]))


@pytest.mark.parametrize("bg_color, rgb", [("81d4fa", (0x81, 0xD4, 0xFA)),
                                           ("#0f0", (0, 255, 0)), ("red", (255, 0, 0))])
def test_an_opaque_bg_color_answers_jpeg_under_auto(client, bg_color, rgb):
    response = post_file(client, {"bg_color": bg_color})
    image = open_image(response.body)
    assert response.content_type == "image/jpeg" and image.mode == "RGB"
    assert all(abs(a - b) <= 12 for a, b in zip(image.getpixel((2, 2)), rgb))


def test_a_translucent_bg_color_keeps_alpha_under_auto(client):
    image = open_image(post_file(client, {"bg_color": "00ff0080"}).body)
    assert image.mode == "RGBA"
    red, green, blue, alpha = image.getpixel((2, 2))  # background, far from the subject
    assert green > 200 and 100 <= alpha <= 160


def test_crop_margin_in_pixels_sets_the_foregrounds_offset(client):
    plain = post_file(client)
    cropped = post_file(client, {"crop": "true", "crop_margin": "10px 20px"})
    top = int(plain.headers["X-Foreground-Top"])
    left = int(plain.headers["X-Foreground-Left"])
    assert int(cropped.headers["X-Foreground-Top"]) == min(10, top)
    assert int(cropped.headers["X-Foreground-Left"]) == min(20, left)
    assert cropped.headers["X-Foreground-Width"] == plain.headers["X-Foreground-Width"]


def test_a_background_image_fills_behind_the_subject(client):
    response = client.post(PATH, upload_files=[("image_file", "a.png", PHOTO),
                                               ("bg_image_file", "b.png", photo_bytes("grass.png"))])
    assert response.content_type == "image/jpeg"


@pytest.mark.parametrize("fields, code", [
    ({"image_url": "http://example.invalid/a.jpg"}, "image_url_not_supported"),
    ({"bg_image_url": "http://example.invalid/b.jpg"}, "bg_image_url_not_supported"),
    ({"size": "huge"}, "invalid_size"),
    ({"crop_margin": "10px 20px 30px"}, "invalid_crop_margin"),
    ({"bg_color": "not-a-colour"}, "invalid_bg_color"),
    ({"Crop": "true"}, "unknown_parameter"),
    ({"type": "bicycle"}, "invalid_type"),
])
def test_mistakes_are_400_in_remove_bgs_error_shape(client, fields, code):
    title = removebg_error(post_file(client, fields, status=400), 400, code)
    if code == "unknown_parameter":
        assert "'Crop'" in title and "crop" in title
    if code == "image_url_not_supported":
        assert "no outbound requests" in title


def test_no_image_and_a_wrong_body_type_are_400(client):
    removebg_error(client.post(PATH, {"size": "hd"}, status=400), 400, "missing_image")
    response = client.post(PATH, b"{}", content_type="text/plain", status=400)
    removebg_error(response, 400, "unsupported_content_type")
    response = client.post_json(PATH, {"image_file_b64": "@@@"}, status=400)
    removebg_error(response, 400, "invalid_image_file_b64")
    response = client.post_json(PATH, {"image_file_b64": "aGVsbG8=", "crop": "yes"}, status=400)
    removebg_error(response, 400, "invalid_parameter_type")


def test_a_damaged_image_is_400_and_a_large_one_413(service):
    client = webtest.TestApp(Service(make_settings(max_upload_mb=0.05), service.segmenter))
    removebg_error(post_file(client, data=b"not an image", status=400), 400, "unsupported_image")
    title = removebg_error(post_file(client, data=b"\0" * 60_000, status=413), 413,
                           "file_too_large")
    assert "MAX_UPLOAD_MB=0.05" in title


def test_the_api_key_is_read_from_x_api_key_and_a_wrong_one_is_403(service):
    client = webtest.TestApp(Service(make_settings(api_key="s3cret"), service.segmenter))
    removebg_error(post_file(client, status=403), 403, "auth_failed")
    removebg_error(post_file(client, headers={"X-Api-Key": "wrong"}, status=403), 403,
                   "auth_failed")
    assert post_file(client, headers={"X-Api-Key": "s3cret"}).content_type == "image/png"


def test_full_size_png_is_byte_for_byte_what_api_bg_remove_answers(client):
    # One pipeline: the same decode, model, cut-out and encoder behind both endpoints.
    ours = client.post("/api/bg/remove", upload_files=[("file", "a.png", PHOTO)])
    theirs = post_file(client, {"size": "full", "format": "png"})
    assert theirs.body == ours.body
    for header in ("X-Width", "X-Height", "X-Foreground-Top", "X-Foreground-Left",
                   "X-Foreground-Width", "X-Foreground-Height"):
        assert theirs.headers[header] == ours.headers[header]
