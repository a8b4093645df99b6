"""Debian's nginx with deploy/nginx/isnet-wsgi.conf in front of `make run`'s
gunicorn, as a user deploys them; over loopback (`make nginx` installs nginx).

The client speaks from 127.0.0.2 and nginx from 127.0.0.1, so the two
addresses can be told apart in gunicorn's log.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shlex
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import multipart_body, open_image, photo_bytes
from tests.processes import process_group
from tests.system.server import ROOT, free_port, read_response, running_gunicorn

NGINX = Path("/usr/sbin/nginx")
SITE_CONFIG = ROOT / "deploy" / "nginx" / "isnet-wsgi.conf"
NGINX_ADDRESS = "127.0.0.1"
CLIENT_ADDRESS = "127.0.0.2"
# What a user sets beside the proxy (deploy/README.md, "The client's address
# in gunicorn's log"): gunicorn trusts the proxy's X-Forwarded-Proto, and its
# access log names the client.
GUNICORN_ENV = {
    "FORWARDED_ALLOW_IPS": NGINX_ADDRESS,
    "GUNICORN_CMD_ARGS": shlex.join([
        "--access-logfile", "-", "--access-logformat",
        '%({x-forwarded-for}i)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms %({x-request-id}i)s']),
}
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


# --- nginx, started and stopped by the test ------------------------------------


def site_config(listen_port: int, upstream_port: int) -> str:
    """The shipped file with the two lines every user changes: where nginx
    listens and where the replica is."""
    text = SITE_CONFIG.read_text()
    replacements = {"listen 80;": f"listen {NGINX_ADDRESS}:{listen_port};",
                    "server 127.0.0.1:5000;": f"server {NGINX_ADDRESS}:{upstream_port};"}
    for line, replacement in replacements.items():
        assert text.count(line) == 1, f"{SITE_CONFIG.name} should have one '{line}'"
        text = text.replace(line, replacement)
    return text


def main_config(prefix: Path, site: Path) -> str:
    """A minimal nginx.conf whose every writable path is in the test's directory."""
    # The test's directory is private to its user; nginx's workers would
    # otherwise drop from root to nobody and could not write their temp files.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in TEMP_KINDS)
    return f"""{user}
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} notice;
events {{ worker_connections 64; }}
http {{
    access_log {prefix / "access.log"};
{temp_paths}
    include {site};
}}
"""


@contextmanager
def running_nginx(tmp_path: Path, upstream_port: int):
    """nginx in the foreground with the shipped site config; yields its port."""
    port = free_port()
    prefix = tmp_path / f"nginx-{port}"
    prefix.mkdir()
    site = prefix / SITE_CONFIG.name
    site.write_text(site_config(port, upstream_port))
    config = prefix / "nginx.conf"
    config.write_text(main_config(prefix, site))
    error_log = prefix / "error.log"
    # -e: the error log before the config is read (else /var/log/nginx/).
    args = [str(NGINX), "-p", str(prefix), "-c", str(config), "-e", str(error_log)]
    with open(prefix / "stdout.log", "wb") as output, process_group(
            args, stdout=output, stderr=subprocess.STDOUT) as process:
        wait_listening(port, process, error_log)
        yield port


def wait_listening(port: int, process: subprocess.Popen, error_log: Path,
                   timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited {process.returncode}:\n{error_log.read_text()}")
        try:
            socket.create_connection((NGINX_ADDRESS, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nginx did not listen within {timeout_s} s:\n{error_log.read_text()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(gunicorn, nginx's port): one replica behind one nginx."""
    tmp_path = tmp_path_factory.mktemp("nginx")
    with running_gunicorn(tmp_path, **GUNICORN_ENV) as server, \
            running_nginx(tmp_path, server.port) as port:
        yield server, port


# --- Talking to nginx as the client, and reading gunicorn's log ----------------


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection(NGINX_ADDRESS, port, timeout=60,
                                            source_address=(CLIENT_ADDRESS, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def wait_for_log(server, find, what: str, timeout_s: float = 10):
    """What ``find`` finds in gunicorn's log. Both logs, gunicorn's access
    log and the service's JSON lines, are written after the response has
    gone, so wait a moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = find(server.log.splitlines())
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no log line for {what}:\n{server.log[-3000:]}")


def access_log_line(server, request_id: str) -> str:
    """gunicorn's access log line for this request id (GUNICORN_ENV's format ends with it)."""
    return wait_for_log(server, lambda lines: next(
        (line for line in lines if line.endswith(f" {request_id}")), None), request_id)


def app_log(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def app_log_entry(server, request_id: str) -> dict:
    """The service's own JSON line for this request id."""
    return wait_for_log(server, lambda lines: next(
        (entry for entry in app_log(lines) if entry.get("request_id") == request_id), None),
        request_id)


def assert_nginx_json_error(status: int, headers: dict, body: bytes, expected_status: int,
                            expected_code: str) -> None:
    assert (status, headers["content-type"]) == (expected_status, "application/json")
    error = json.loads(body)
    assert error["error"] == expected_code and error["message"]


# --- The five checks ------------------------------------------------------------


def test_a_removal_through_nginx(stack):
    _, port = stack
    body, content_type = multipart_body(photo_bytes("astronaut.png"), "astronaut.png")
    status, headers, answer = request(port, "POST", "/api/bg/remove", body,
                                      {"Content-Type": content_type})
    assert (status, headers["content-type"]) == (200, "image/png"), answer[:300]
    cutout = open_image(answer)
    assert cutout.mode == "RGBA" and cutout.size == (512, 512)
    alpha = cutout.getchannel("A")
    assert alpha.getextrema() == (0, 255), "a cutout has transparent and opaque pixels"


def test_a_slow_upload_is_absorbed_by_nginx_while_health_answers_at_once(stack):
    server, port = stack
    body, content_type = multipart_body(photo_bytes("brick.png"), "brick.png")
    head = (f"POST /api/bg/remove HTTP/1.1\r\nHost: isnet\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: slow-upload\r\n"
            "Connection: close\r\n\r\n").encode()
    pieces = [body[i:i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
    with socket.create_connection((NGINX_ADDRESS, port), timeout=60,
                                  source_address=(CLIENT_ADDRESS, 0)) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for number, piece in enumerate(pieces):
            sock.sendall(piece)
            if number == 1:  # the upload is under way, a quarter of it sent
                asked = time.monotonic()
                health = request(port, "GET", "/api/bg/health",
                                 headers={"X-Request-ID": "during-upload"})
                health_s = time.monotonic() - asked
            if number < len(pieces) - 1:
                time.sleep(0.5)
        upload_s = time.monotonic() - started
        status, headers, answer = read_response(sock, timeout_s=60)
    print(f"upload {upload_s:.1f} s, health {health_s * 1000:.0f} ms")
    assert health[0] == 200 and json.loads(health[2])["status"] == "healthy"
    assert health_s < 1.0, "the worker was not held by the upload"
    assert (status, headers["content-type"]) == (200, "image/png"), answer[:300]
    app_log_entry(server, "slow-upload")
    # The worker served the health request sent mid-upload first: it was not
    # reading the upload meanwhile, nginx was.
    served = [entry.get("request_id") for entry in app_log(server.log.splitlines())]
    assert upload_s > 3 and served.index("during-upload") < served.index("slow-upload")


def test_an_oversized_upload_is_refused_by_nginx_with_our_json_error(stack):
    server, port = stack
    head = (b"POST /api/bg/remove HTTP/1.1\r\nHost: isnet\r\n"
            b"Content-Type: image/png\r\nContent-Length: %d\r\n"
            b"X-Request-ID: too-large\r\n\r\n" % (64 * 1024 * 1024))
    with socket.create_connection((NGINX_ADDRESS, port), timeout=30,
                                  source_address=(CLIENT_ADDRESS, 0)) as sock:
        sock.sendall(head)
        status, headers, body = read_response(sock)
    assert_nginx_json_error(status, headers, body, 413, "body_too_large")
    assert headers["x-request-id"] == "too-large"
    # The one worker serves requests in order: once a later request is
    # logged, the refused one would have been too, had it reached gunicorn.
    request(port, "GET", "/api/bg/health", headers={"X-Request-ID": "after-too-large"})
    access_log_line(server, "after-too-large")
    logged_ids = [entry.get("request_id") for entry in app_log(server.log.splitlines())]
    assert "too-large" not in logged_ids


def test_the_request_id_is_passed_through_or_made_by_nginx(stack):
    server, port = stack
    status, headers, _ = request(port, "GET", "/api/bg/health",
                                 headers={"X-Request-ID": "trace-4f2a"})
    assert (status, headers["x-request-id"]) == (200, "trace-4f2a")
    assert app_log_entry(server, "trace-4f2a")["path"] == "/api/bg/health"

    status, headers, _ = request(port, "GET", "/api/bg/health")
    made = headers["x-request-id"]
    assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", made), "nginx's $request_id"
    assert app_log_entry(server, made)["status"] == 200


def test_gunicorn_logs_the_clients_address_not_nginxs(stack):
    server, port = stack
    # A client's own X-Forwarded-For is replaced, not believed.
    request(port, "GET", "/api/bg/health",
            headers={"X-Request-ID": "who-asked", "X-Forwarded-For": "203.0.113.7"})
    line = access_log_line(server, "who-asked")
    client, proxy = line.split()[:2]
    assert (client, proxy) == (CLIENT_ADDRESS, NGINX_ADDRESS), line
    assert "203.0.113.7" not in line


# --- nginx's own errors -----------------------------------------------------------


def test_no_replica_answering_is_a_json_502(tmp_path):
    with running_nginx(tmp_path, upstream_port=free_port()) as port:
        status, headers, body = request(port, "GET", "/api/bg/health",
                                        headers={"X-Request-ID": "nobody-home"})
    assert_nginx_json_error(status, headers, body, 502, "bad_gateway")
    assert headers["x-request-id"] == "nobody-home"
