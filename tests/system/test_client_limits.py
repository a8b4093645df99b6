"""One client gets a bounded share of the single worker, and every answer,
gunicorn's own included, is the API's JSON; over real sockets to gunicorn."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import multipart_body, photo_bytes
from tests.system.server import read_response, running_gunicorn

MB = 1024 * 1024


def raw_exchange(server, data: bytes, timeout_s: float = 30) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as sock:
        sock.sendall(data)
        return read_response(sock, timeout_s)


def assert_json_error(status: int, headers: dict, body: bytes, expected_status: int,
                      expected_code: str) -> None:
    assert (status, headers["content-type"]) == (expected_status, "application/json")
    error = json.loads(body)
    assert error["error"] == expected_code and error["message"]
    assert headers["connection"] == "close"


HOST = b"Host: x\r\n"

# What gunicorn itself refuses before the app sees a request.
FRAMING_ERRORS = {
    "two Content-Lengths": (b"POST /api/bg/remove HTTP/1.1\r\n" + HOST +
                            b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                            400, "malformed_request"),
    "junk Content-Length": (b"POST /api/bg/remove HTTP/1.1\r\n" + HOST +
                            b"Content-Length: 1x\r\n\r\n", 400, "malformed_request"),
    "Transfer-Encoding and Content-Length": (
        b"POST /api/bg/remove HTTP/1.1\r\n" + HOST +
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400, "malformed_request"),
    "bare LF": (b"GET /api/bg/health HTTP/1.1\nHost: x\n\n", 400, "malformed_request"),
    "NUL in a header": (b"GET /api/bg/health HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
                        400, "malformed_request"),
    "obsolete folding": (b"GET /api/bg/health HTTP/1.1\r\n" + HOST + b"X-A: a\r\n b\r\n\r\n",
                         400, "malformed_request"),
    "bad method": (b"G@T /api/bg/health HTTP/1.1\r\n" + HOST + b"\r\n", 400, "malformed_request"),
    "HTTP/0.9": (b"GET /api/bg/health\r\n\r\n", 400, "malformed_request"),
    "request line over 4094 bytes": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
                                     414, "request_line_too_long"),
    "200 headers": (b"GET /api/bg/health HTTP/1.1\r\n" + HOST +
                    b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
                    431, "headers_too_large"),
    "a 10 KB header": (b"GET /api/bg/health HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 10240 +
                       b"\r\n\r\n", 431, "headers_too_large"),
    "odd Expect": (b"GET /api/bg/health HTTP/1.1\r\n" + HOST + b"Expect: 200-ok\r\n\r\n",
                   417, "expectation_failed"),
    "HTTP/2.0 request line": (b"GET /api/bg/health HTTP/2.0\r\n" + HOST + b"\r\n",
                              505, "http_version_not_supported"),
    "HTTP/1.1 without Host": (b"GET /api/bg/health HTTP/1.1\r\n\r\n", 400, "missing_host"),
    "a transfer coding without chunked": (b"POST /api/bg/remove HTTP/1.1\r\n" + HOST +
                                          b"Transfer-Encoding: gzip\r\n\r\n",
                                          400, "malformed_request"),
}


@pytest.mark.parametrize("request_bytes, status, code", FRAMING_ERRORS.values(),
                         ids=FRAMING_ERRORS.keys())
def test_what_gunicorn_refuses_is_answered_as_json(server, request_bytes, status, code):
    assert_json_error(*raw_exchange(server, request_bytes), status, code)


def test_http_1_0_needs_no_host(server):
    status, _, body = raw_exchange(server, b"GET /api/bg/health HTTP/1.0\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "healthy"


class SlowClient(threading.Thread):
    """Sends an upload 100 bytes every 0.5 s (from the head, or from the body on)."""

    def __init__(self, port: int, *, slow_from: str):
        super().__init__(daemon=True)
        body, content_type = multipart_body(b"x" * 3000, "a.png")
        # A head long enough that, at this pace, it outlasts the head deadline.
        padding = "p" * 1500 if slow_from == "head" else ""
        head = (f"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"X-Padding: {padding}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.fast, self.slow = (b"", head + body) if slow_from == "head" else (head, body)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=90)
        self.answer: tuple[int, dict, bytes] | None = None

    def run(self):
        with self.sock:
            try:
                self.sock.sendall(self.fast)
                for start in range(0, len(self.slow), 100):
                    self.sock.sendall(self.slow[start:start + 100])
                    time.sleep(0.5)
            except OSError:
                pass  # refused mid-way: the answer is waiting
            self.answer = read_response(self.sock)


@pytest.mark.parametrize("slow_from, code", [("head", "header_timeout"),
                                             ("body", "body_timeout")])
def test_a_slow_client_gets_408_and_others_are_served_meanwhile(server, slow_from, code):
    slow = SlowClient(server.port, slow_from=slow_from)
    slow.start()
    time.sleep(0.5)  # the slow client's connection is held now
    # A probe that gives up after 10 s (Kubernetes' timeoutSeconds, say) is answered.
    status, _, body = server.request("GET", "/api/bg/health", timeout_s=10)
    assert status == 200 and json.loads(body)["status"] == "healthy"
    slow.join(timeout=60)
    assert_json_error(*slow.answer, 408, code)
    status, headers, _ = server.upload("/api/bg/remove", photo_bytes("camera.png"))
    assert (status, headers["Content-Type"]) == (200, "image/png")


def test_an_early_413_reaches_a_client_that_sends_everything_before_reading(server):
    # urllib writes the whole body, then reads: without a lingering close the
    # unread body makes the kernel reset the connection and it sees a broken pipe.
    for declared_mb in (9, 14):
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/bg/remove", data=b"\x89PNG" * (declared_mb * MB // 4),
            headers={"Content-Type": "image/png"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert json.loads(refused.value.read())["error"] == "body_too_large"


def test_a_client_just_above_the_minimum_rate_holds_a_connection_not_the_worker(tmp_path):
    """An attacker who sends just fast enough: the head near its deadline, the
    body just above the minimum rate, for as long as the upload may take. It
    gets its 408 when the upload timeout ends, and the worker answers others
    all the while (before the connection pool, it held the worker throughout)."""
    head_s, upload_s = 1.0, 3.0
    with running_gunicorn(tmp_path, REQUEST_HEAD_TIMEOUT_S=str(head_s),
                          UPLOAD_TIMEOUT_S=str(upload_s), UPLOAD_GRACE_S="0.5",
                          MIN_UPLOAD_RATE_KB_S="4") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\n")
            time.sleep(head_s * 0.8)
            sock.sendall(b"Content-Type: image/png\r\nContent-Length: 8000000\r\n\r\n")
            health_answers = 0
            for _ in range(200):  # 40 s at most; the upload timeout ends it in 3
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is there
                sock.sendall(b"x" * 2048)  # 10 KiB/s: above the 4 KiB/s minimum
                assert server.json("/api/bg/health")["status"] == "healthy"
                health_answers += 1
                time.sleep(0.2)
            answer = read_response(sock)
        assert_json_error(*answer, 408, "body_timeout")
        assert health_answers >= 5  # answered while the attacker held its connection
