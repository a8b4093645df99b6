"""Helpers for system tests: real gunicorn, started with the project's gunicorn.conf.py, spoken to over loopback."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# NOTE: the bench starts the service with the same environment and helpers.
from bench.harness import (
    children,
    free_port,
    http_request,
    multipart_body,
    process_group,
)
from bench.harness import service_env as server_env

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
__all__ = ["GUNICORN", "ROOT", "Server", "free_port", "read_response", "running_gunicorn",
           "server_env"]


class Server:
    """A running gunicorn master and how to talk to it."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout_s: float = 60):
        return http_request(self.port, method, path, body, headers, timeout_s)

    def send_upload(self, path: str, data: bytes, filename: str = "photo.png"):
        """Send an upload and return the open connection without waiting for
        the answer: the request is then in flight, for signal tests."""
        body, content_type = multipart_body(data, filename)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        return connection

    def json(self, path: str) -> dict:
        status, _, body = self.request("GET", path)
        return json.loads(body)

    def upload(self, path: str, data: bytes, filename: str = "photo.png", fields=None,
               timeout_s: float = 60):
        body, content_type = multipart_body(data, filename, fields or {})
        return self.request("POST", path, body, {"Content-Type": content_type},
                            timeout_s=timeout_s)

    def wait_healthy(self, timeout_s: float = 60, not_pid: int | None = None) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.process.returncode}:\n{self.log}")
            try:
                status, _, body = self.request("GET", "/api/bg/status", timeout_s=5)
                state = json.loads(body)
                if status == 200 and state["status"] == "ready" and state["worker_pid"] != not_pid:
                    return state
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn was not healthy within {timeout_s} s:\n{self.log}")

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)


def read_response(sock: socket.socket, timeout_s: float = 30) -> tuple[int, dict, bytes]:
    """Read one HTTP/1.1 response from a raw socket (headers + Content-Length body)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@contextmanager
def running_gunicorn(tmp_path: Path, *, command_prefix: tuple[str, ...] = (),
                     env: dict | None = None, **settings: str):
    """Start `gunicorn -c gunicorn.conf.py` as `make run` does; stop it afterwards.

    ``command_prefix`` runs it under another program (strace, say).
    """
    port = free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log, process_group(
            [*command_prefix, str(GUNICORN), "-c", "gunicorn.conf.py"], cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT,
            env=(env or server_env()) | {"PORT": str(port), **settings}) as process:
        server = Server(process, port, log_path)
        server.wait_healthy()
        yield server


