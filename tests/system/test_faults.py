"""Faults a production service meets: oversized and endless bodies, killed and
stopped workers, requests past the timeout. It keeps serving, and every
request gets an answer or a visible error, never silence."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest
from PIL import Image

from tests.helpers import encode_image, multipart_body, open_image, photo_bytes
from tests.system.server import read_response, running_gunicorn

MB = 1024 * 1024


def big_photo_png() -> bytes:
    image = open_image(photo_bytes("astronaut.png")).resize((1024, 1024), Image.BILINEAR)
    return encode_image(image, "PNG")


def test_declared_50mb_is_refused_before_the_body_is_sent(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 52428800\r\n\r\n" + b"x" * 1024)
        status, headers, body = read_response(sock)
    assert status == 413
    assert json.loads(body)["error"] == "body_too_large"
    assert time.monotonic() - started < 10  # it did not wait for 50 MB that never came


def test_chunked_body_growing_past_the_limit_is_refused_while_streaming(server):
    sent = [0]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        part_head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                     b"filename=\"a.png\"\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n" % (len(part_head), part_head))

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
    assert json.loads(body)["error"] in ("file_too_large", "body_too_large")
    assert sent[0] < 32 * MB


def test_a_request_past_its_deadline_gets_an_answer_and_the_next_is_served(tmp_path):
    # A 5 s timeout leaves the least inference budget (0.1 s) after the 5 s
    # response margin; a 1024-px run on one thread takes several times that
    # however fast the machine, so the deadline must cut it short.
    with running_gunicorn(tmp_path, REQUEST_TIMEOUT_S="5", INTRA_OP_THREADS="1") as server:
        started = time.monotonic()
        status, headers, body = server.upload("/api/bg/remove", big_photo_png(), "big.png")
        assert status == 503
        assert json.loads(body)["error"] == "timeout"
        assert int(headers["Retry-After"]) > 0
        assert time.monotonic() - started < 5  # answered before gunicorn's kill
        # The same worker, not a replacement, serves the next request.
        assert server.json("/api/bg/health")["status"] == "healthy"
        assert server.json("/api/bg/status")["worker_starts"] == 1


def test_a_worker_killed_mid_request_is_replaced_and_health_returns(server):
    worker = server.json("/api/bg/status")["worker_pid"]
    connection = server.send_upload("/api/bg/remove", big_photo_png(), "big.png")
    time.sleep(0.3)  # the worker is now decoding or inferring
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    # The client sees the connection close: a visible failure, never silence.
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        connection.getresponse().read()
    connection.close()
    state = server.wait_healthy(timeout_s=30, not_pid=worker)
    print(f"healthy again {time.monotonic() - killed_at:.2f} s after SIGKILL")
    assert state["worker_pid"] != worker
    assert server.upload("/api/bg/remove", photo_bytes("camera.png"))[0] == 200


def test_sigterm_lets_the_request_in_flight_finish(tmp_path):
    with running_gunicorn(tmp_path) as server:
        connection = server.send_upload("/api/bg/remove", big_photo_png(), "big.png")
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status == 200 and response.getheader("Content-Type") == "image/png"
        assert open_image(body).size == (1024, 1024)
        assert server.process.wait(timeout=60) == 0


def test_a_broken_chunked_encoding_is_400_not_500(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nnot-a-chunk-size\r\n")
        status, _, body = read_response(sock)
    assert status == 400
    assert json.loads(body)["error"] == "unreadable_body"


@pytest.mark.parametrize("body, content_type, status", [
    (b"not multipart at all", "text/plain", 415),
    (b"--b\r\nno headers end", "multipart/form-data; boundary=b", 400),
    (*multipart_body(b"GIF89a junk", "x.gif"), 415),
    (*multipart_body(photo_bytes("coffee.png")[:4000], "cut.png"), 400),
])
def test_bad_bodies_over_http_are_json_4xx_and_the_worker_lives(server, body, content_type,
                                                              status):
    worker = server.json("/api/bg/status")["worker_pid"]
    answer, headers, payload = server.request("POST", "/api/bg/remove", body,
                                              {"Content-Type": content_type})
    assert answer == status and headers["Content-Type"] == "application/json"
    assert "error" in json.loads(payload)
    assert server.json("/api/bg/status")["worker_pid"] == worker
