"""Raw-body uploads over real HTTP, as `curl --data-binary @photo.jpg` sends them."""

from __future__ import annotations

import json
import socket
import threading

from tests.helpers import encode_image, open_image, photo_bytes
from tests.system.test_faults import MB, read_response


def test_a_raw_jpeg_body_is_cut_out_with_options_from_the_query(server):
    data = encode_image(open_image(photo_bytes("astronaut.png")).resize((200, 200)), "JPEG")
    status, headers, body = server.request(
        "POST", "/api/bg/remove?format=webp", data, {"Content-Type": "image/jpeg"})
    assert status == 200 and headers["Content-Type"] == "image/webp"
    assert headers["Content-Disposition"] == 'attachment; filename="nobg_image.webp"'
    assert headers["X-Cache"] == "miss"
    image = open_image(body)
    assert image.mode == "RGBA" and image.size == (200, 200)


def test_a_chunked_raw_body_is_refused_while_it_streams_past_the_limit(server):
    sent = [0]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        # No Content-Length: only counting the streamed bytes can stop it.
        sock.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")

        def keep_sending():
            chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
            try:
                while sent[0] < 64 * MB:  # far past the limit; stops once refused
                    sock.sendall(chunk)
                    sent[0] += 0x10000
            except OSError:
                pass  # the server answered and closed: what this test wants

        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        status, _, body = read_response(sock)
        sender.join(timeout=30)
    assert status == 413
    assert json.loads(body)["error"] == "body_too_large"
    assert sent[0] < 32 * MB
