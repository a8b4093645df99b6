"""Raw-body uploads over real HTTP, as `curl --data-binary @photo.jpg` sends them."""

from __future__ import annotations

from tests.helpers import encode_image, open_image, photo_bytes


def test_a_raw_jpeg_body_is_cut_out_with_options_from_the_query(server):
    data = encode_image(open_image(photo_bytes("astronaut.png")).resize((200, 200)), "JPEG")
    status, headers, body = server.request(
        "POST", "/api/bg/remove?format=webp", data, {"Content-Type": "image/jpeg"})
    assert status == 200 and headers["Content-Type"] == "image/webp"
    assert headers["Content-Disposition"] == 'attachment; filename="nobg_image.webp"'
    assert headers["X-Cache"] == "miss"
    image = open_image(body)
    assert image.mode == "RGBA" and image.size == (200, 200)
