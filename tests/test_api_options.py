"""The options of /remove and /change_color, and raw-body uploads, on real photos.

Each option that changes the image costs one inference, so each is checked
with one request whose response serves several assertions.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import encode_image, multipart_body, open_image, photo_bytes
from tests.test_api import change_color, remove


def astronaut_face_and_sky(image: Image.Image) -> tuple[float, float]:
    """Mean of the face and of the top-left sky in the astronaut photo's alpha/mask."""
    values = np.asarray(image, dtype=float)
    return values[40:120, 180:260].mean(), values[:40, :40].mean()


# --- /api/bg/remove ----------------------------------------------------------

def test_remove_as_lossless_webp_with_alpha(client):
    response = remove(client, photo_bytes("astronaut.png"), "astronaut.png",
                      params={"format": "webp"})
    assert response.content_type == "image/webp"
    assert response.headers["Content-Disposition"] == 'attachment; filename="nobg_astronaut.webp"'
    image = open_image(response.body)
    assert image.format == "WEBP" and image.mode == "RGBA" and image.size == (512, 512)
    face, sky = astronaut_face_and_sky(image.getchannel("A"))
    assert face > 240 and sky < 10
    # Lossless: the subject's pixels are the photo's own.
    original = np.asarray(open_image(photo_bytes("astronaut.png")).convert("RGB"), dtype=int)
    opaque = np.asarray(image.getchannel("A")) == 255
    assert np.abs(np.asarray(image.convert("RGB"), dtype=int)[opaque] - original[opaque]).max() == 0


def test_remove_mask_true_returns_the_greyscale_mask(client):
    response = remove(client, photo_bytes("astronaut.png"), "astronaut.png",
                      params={"mask": "yes"})
    assert response.content_type == "image/png"
    assert response.headers["Content-Disposition"] == 'attachment; filename="mask_astronaut.png"'
    mask = open_image(response.body)
    assert mask.mode == "L" and mask.size == (512, 512)
    face, sky = astronaut_face_and_sky(mask)
    assert face > 240 and sky < 10


def test_remove_crop_true_crops_to_the_subject_and_margin_widens_it(client):
    data = photo_bytes("coffee.png")  # 600x400, the cup in the middle
    tight = open_image(remove(client, data, "coffee.png", params={"crop": "true"}).body)
    width, height = tight.size
    assert width < 600 and height < 400
    alpha = np.asarray(tight.getchannel("A"))
    # Tight: the subject touches every edge of the crop.
    for edge in (alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]):
        assert edge.max() > 16
    wide = open_image(remove(client, data, "coffee.png",
                             params={"crop": "1", "margin": "20"}).body)
    assert width < wide.size[0] <= min(600, width + 40)
    assert height <= wide.size[1] <= min(400, height + 40)


def test_remove_max_dimension_scales_the_output(client):
    response = remove(client, photo_bytes("coffee.png"), "coffee.png",
                      params={"max_dimension": "150"})
    image = open_image(response.body)
    assert image.size == (150, 100) and image.mode == "RGBA"


def test_remove_refine_true_moves_only_the_unsure_edges(client):
    data = photo_bytes("astronaut.png")
    plain = np.asarray(open_image(remove(client, data, params={"refine": "false"}).body)
                       .getchannel("A"), dtype=int)
    refined_image = open_image(remove(client, data, params={"refine": "true"}).body)
    refined = np.asarray(refined_image.getchannel("A"), dtype=int)
    assert refined_image.size == (512, 512)
    assert (refined != plain).any()
    sure = (plain == 0) | (plain == 255)
    assert (refined[sure] == plain[sure]).mean() > 0.9  # far from edges, nothing moves
    face, sky = astronaut_face_and_sky(refined_image.getchannel("A"))
    assert face > 240 and sky < 10


@pytest.mark.parametrize("params, code", [
    ({"format": "gif"}, "invalid_format"),
    ({"refine": "sometimes"}, "invalid_refine"),
    ({"format": "jpeg"}, "invalid_format"),  # no alpha: not a cut-out format
    ({"mask": "maybe"}, "invalid_mask"),
    ({"crop": "2"}, "invalid_crop"),
    ({"crop": "true", "margin": "-1"}, "invalid_margin"),
    ({"crop": "true", "margin": "ten"}, "invalid_margin"),
    ({"crop": "true", "margin": "1025"}, "invalid_margin"),
    ({"margin": "10"}, "invalid_margin"),  # a margin without crop is a mistake
    ({"max_dimension": "1025"}, "invalid_max_dimension"),  # above the ceiling: refused
    ({"max_dimension": "15"}, "invalid_max_dimension"),
    ({"max_dimension": "1.5"}, "invalid_max_dimension"),
    # Numbers are ASCII digits only, in every option (issue 12).
    ({"max_dimension": "\uff15\uff11\uff12"}, "invalid_max_dimension"),  # full-width 512
    ({"max_dimension": "1" * 5000}, "invalid_max_dimension"),  # int() itself would raise
    ({"crop": "true", "margin": "\u0661\u0660"}, "invalid_margin"),  # Arabic-Indic 10
])
def test_remove_refuses_bad_options_with_a_code(client, params, code):
    response = remove(client, photo_bytes("camera.png"), "camera.png", params=params,
                      status=400)
    assert response.json["error"] == code
    assert response.json["message"]


def test_options_in_the_form_win_over_the_query_string(client):
    body, content_type = multipart_body(photo_bytes("camera.png"), "camera.png",
                                        {"format": "bmp"})
    response = client.request("/api/bg/remove?format=webp", method="POST", body=body,
                              content_type=content_type, status=400)
    assert "'bmp'" in response.json["message"]


# --- Raw-body uploads ----------------------------------------------------------

def test_raw_image_body_with_options_in_the_query(client):
    data = encode_image(open_image(photo_bytes("astronaut.png")).resize((256, 256)), "JPEG")
    response = client.request("/api/bg/remove?format=webp&max_dimension=200", method="POST",
                              body=data, content_type="image/jpeg")
    assert response.content_type == "image/webp"
    assert response.headers["Content-Disposition"] == 'attachment; filename="nobg_image.webp"'
    image = open_image(response.body)
    assert image.size == (200, 200) and image.mode == "RGBA"
    face, sky = astronaut_face_and_sky(image.resize((512, 512)).getchannel("A"))
    assert face > 200 and sky < 30


def test_raw_octet_stream_body_is_accepted_as_an_image(client):
    data = photo_bytes("camera.png")
    response = client.request("/api/bg/remove?mask=true", method="POST", body=data,
                              content_type="application/octet-stream")
    assert response.headers["Content-Disposition"] == 'attachment; filename="mask_image.png"'
    assert open_image(response.body).mode == "L"


def test_raw_body_over_the_limit_is_413_before_decoding(client, settings):
    data = b"\0" * (settings.max_upload_bytes + 1)
    response = client.request("/api/bg/remove", method="POST", body=data,
                              content_type="image/png", status=413)
    assert response.json["error"] == "body_too_large"
    # The limit as the settings write it, not a raw byte count.
    assert f"the limit is {settings.max_upload_mb:g} MB (MAX_UPLOAD_MB=" in response.json["message"]
    assert str(settings.max_upload_bytes) not in response.json["message"]


class EndlessBody:
    """A wsgi.input that never ends, counting what the app reads from it."""

    def __init__(self):
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        self.bytes_read += size
        return b"x" * size


def test_raw_body_without_a_length_is_refused_while_it_streams(service, settings):
    # No Content-Length (as with chunked encoding): only counting can stop it.
    body = EndlessBody()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/bg/remove",
               "CONTENT_TYPE": "image/png", "wsgi.input": body, "wsgi.errors": sys.stderr}
    statuses = []
    answer = b"".join(service(environ, lambda status, headers: statuses.append(status)))
    assert len(statuses) == 1 and statuses[0].startswith("413 ")
    assert json.loads(answer)["error"] == "body_too_large"
    assert settings.max_upload_bytes < body.bytes_read <= settings.max_upload_bytes + 65536


def test_raw_body_that_is_not_an_image_is_415(client):
    response = client.request("/api/bg/change_color", method="POST", body=b"plain text",
                              content_type="image/png", status=415)
    assert response.json["error"] == "unsupported_image"


# --- /api/bg/change_color -----------------------------------------------------

@pytest.mark.parametrize("image_format, content_type, extension", [
    ("png", "image/png", "png"), ("webp", "image/webp", "webp"), ("jpg", "image/jpeg", "jpg")])
def test_change_color_formats(client, image_format, content_type, extension):
    small = encode_image(open_image(photo_bytes("astronaut.png")).resize((128, 128)), "PNG")
    response = change_color(client, small, "#00FF00", "a.png", params={"format": image_format})
    assert response.content_type == content_type
    assert response.headers["Content-Disposition"].endswith(f'filename="color_a.{extension}"')
    image = open_image(response.body)
    assert image.mode == "RGB" and image.size == (128, 128)
    corner = np.asarray(image, dtype=int)[:8, :8].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - (0, 255, 0)).max() < 12


def test_change_color_onto_an_uploaded_background_fitted_by_cover(client):
    # A 2:1 background, half red and half blue, fitted to a square photo:
    # cover crops the sides, so both colours remain, left and right.
    background = Image.new("RGB", (800, 400), (255, 0, 0))
    background.paste((0, 0, 255), (400, 0, 800, 400))
    response = client.post("/api/bg/change_color", params={"format": "png"}, upload_files=[
        ("file", "astronaut.png", photo_bytes("astronaut.png")),
        ("bg_file", "bg.jpg", encode_image(background, "JPEG"))])
    image = np.asarray(open_image(response.body), dtype=int)
    assert image.shape == (512, 512, 3)
    assert np.abs(image[:32, :32].reshape(-1, 3).mean(axis=0) - (255, 0, 0)).max() < 20
    assert np.abs(image[:32, -32:].reshape(-1, 3).mean(axis=0) - (0, 0, 255)).max() < 20
    face = image[120:160, 220:260].reshape(-1, 3).mean(axis=0)
    assert min(np.abs(face - (255, 0, 0)).max(), np.abs(face - (0, 0, 255)).max()) > 60


def test_change_color_blur_keeps_the_background_blurred(client):
    data = photo_bytes("coffee.png")
    original = np.asarray(open_image(data).convert("RGB"), dtype=float)
    response = change_color(client, data, None, "coffee.png",
                            params={"blur": "12", "format": "png"})
    result = np.asarray(open_image(response.body), dtype=float)
    background = np.asarray(open_image(
        remove(client, data, "coffee.png", params={"mask": "true"}).body)) < 8
    assert background.mean() > 0.2
    # The background is still the photo's colours, but smoother (less detail).
    difference = np.abs(result - original)[background].mean()
    assert 1 < difference < 40

    def detail(pixels):
        return np.abs(np.diff(pixels, axis=1))[background[:, 1:]].mean()
    assert detail(result) < 0.6 * detail(original)


@pytest.mark.parametrize("fields, code", [
    ({"format": "gif"}, "invalid_format"),
    ({"blur": "0"}, "invalid_blur"),
    ({"blur": "101"}, "invalid_blur"),
    ({"blur": "nan"}, "invalid_blur"),
    ({"blur": "\uff15"}, "invalid_blur"),  # full-width 5: ASCII digits only (issue 12)
    ({"blur": "1_0"}, "invalid_blur"),
    ({"blur": "1" * 5000}, "invalid_blur"),
    ({"color": "\uff12\uff15\uff15,0,0"}, "invalid_color"),  # full-width 255
    ({"color": "\u0662\u0665\u0665,0,0"}, "invalid_color"),  # Arabic-Indic 255
    ({"blur": "5", "color": "#fff"}, "conflicting_background"),
    ({"max_dimension": "99999"}, "invalid_max_dimension"),
    ({"refine": "2"}, "invalid_refine"),
])
def test_change_color_refuses_bad_options_with_a_code(client, fields, code):
    response = client.post("/api/bg/change_color", params=fields,
                           upload_files=[("file", "c.png", photo_bytes("camera.png"))],
                           status=400)
    assert response.json["error"] == code


def test_change_color_with_refine(client):
    small = encode_image(open_image(photo_bytes("astronaut.png")).resize((160, 160)), "PNG")
    response = change_color(client, small, "#0000FF", params={"refine": "yes", "format": "png"})
    image = np.asarray(open_image(response.body), dtype=int)
    assert image.shape == (160, 160, 3)
    assert np.abs(image[:8, :8].reshape(-1, 3).mean(axis=0) - (0, 0, 255)).max() < 12


def test_change_color_refuses_a_background_file_with_a_colour(client):
    response = client.post("/api/bg/change_color", params={"color": "#000"}, upload_files=[
        ("file", "c.png", photo_bytes("camera.png")),
        ("bg_file", "b.png", photo_bytes("brick.png"))], status=400)
    assert response.json["error"] == "conflicting_background"


def test_change_color_refuses_a_background_that_is_not_an_image(client):
    response = client.post("/api/bg/change_color", upload_files=[
        ("file", "c.png", photo_bytes("camera.png")),
        ("bg_file", "b.png", b"not an image")], status=415)
    assert response.json["error"] == "unsupported_image"


# --- Mistakes a new user makes, answered so they can act (issue 30) ------------

@pytest.mark.parametrize("path, fields, named", [
    ("/api/bg/remove", {"Crop": "true"}, "'Crop'"),
    ("/api/bg/change_color", {"colour": "#000"}, "'colour'"),
])
def test_an_unknown_option_is_400_naming_it_and_the_options_that_exist(client, path, fields,
                                                                        named):
    response = client.post(path, params=fields, status=400,
                           upload_files=[("file", "c.png", photo_bytes("camera.png"))])
    assert response.json["error"] == "unknown_option"
    assert named in response.json["message"] and "max_dimension" in response.json["message"]


def test_an_unknown_option_in_the_query_is_refused_too(client):
    response = remove(client, photo_bytes("camera.png"), params={}, status=400,
                      extra_environ={"QUERY_STRING": "fromat=webp"})
    assert response.json["error"] == "unknown_option" and "'fromat'" in response.json["message"]


def test_missing_file_names_the_file_fields_that_did_arrive(client):
    response = client.post("/api/bg/remove", status=400,
                           upload_files=[("image", "c.png", photo_bytes("camera.png"))])
    assert response.json["error"] == "missing_file"
    assert "'file'" in response.json["message"] and "'image'" in response.json["message"]


def test_a_bad_value_in_the_query_is_refused_though_the_form_sends_the_option(client):
    body, content_type = multipart_body(photo_bytes("camera.png"), "camera.png",
                                        {"refine": "false"})
    response = client.request("/api/bg/remove?refine=maybe", method="POST", body=body,
                              content_type=content_type, status=400)
    assert response.json["error"] == "invalid_refine"


def test_options_that_go_together_come_together_from_the_form(client):
    # The query's colour is not a second background: the form names its own.
    body, content_type = multipart_body(photo_bytes("camera.png"), "camera.png", {"blur": "4"})
    client.request("/api/bg/change_color?color=%23000", method="POST", body=body,
                   content_type=content_type, status=200)


def test_a_json_number_is_a_number(client):
    # How an OpenAPI client writes a tiny radius; blur must be above 0.
    response = change_color(client, photo_bytes("camera.png"), None, params={"blur": "5e-324"})
    assert response.content_type == "image/jpeg"


def test_remove_answers_the_size_and_the_subjects_box(client):
    response = remove(client, photo_bytes("astronaut.png"), params={"crop": "true",
                                                                    "margin": "8"})
    image = open_image(response.body)
    assert (int(response.headers["X-Width"]), int(response.headers["X-Height"])) == image.size
    # Cropped with an 8 px margin: the subject starts at most 8 px in.
    assert 0 <= int(response.headers["X-Foreground-Left"]) <= 8
    assert int(response.headers["X-Foreground-Width"]) <= image.width


def test_an_option_sent_twice_is_400_not_a_guess(client):
    body, content_type = multipart_body(photo_bytes("camera.png"), "camera.png")
    response = client.request("/api/bg/remove?format=png&format=webp", method="POST",
                              body=body, content_type=content_type, status=400)
    assert response.json["error"] == "repeated_option" and "'format'" in response.json["message"]


def test_spaces_around_a_number_are_refused_but_a_blank_field_is_the_default(client):
    refused = remove(client, photo_bytes("camera.png"), params={"max_dimension": " 64"},
                     status=400)
    assert refused.json["error"] == "invalid_max_dimension"
    remove(client, photo_bytes("camera.png"), params={"max_dimension": "", "format": ""})
