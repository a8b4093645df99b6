"""Our gunicorn service and rembg's server, started on loopback, spoken to over HTTP.

Both are child processes of the bench with a bounded start-up, every request
has a timeout, and both are stopped (SIGTERM, then SIGKILL) on the way out.
Nothing listens on or talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from tests.helpers import multipart_body
from tests.processes import stop_group
from tests.system.server import free_port

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
REMBG_VENV = ROOT / "bench" / ".venv-rembg"
# The rembg release the bench's figures (and models/reference.py) are checked against.
REMBG_REQUIREMENT = "rembg[cpu,cli]==2.0.86"
# What `make run` exports (Makefile) besides PORT. Under `make bench` the same
# exports are already in os.environ and win; run directly, these stand in.
MAKE_RUN_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
                "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "ORT_DISABLE_TELEMETRY": "1"}
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 120


@dataclass(frozen=True)
class Removal:
    """One background-removal request, built before the clock starts: a
    client has its body ready before it sends it, so only the exchange is timed."""

    path: str
    body: bytes
    content_type: str


class Server:
    """A server process on loopback: start, wait until healthy, post photos, stop."""

    name = "server"
    health_path = "/"

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, port: int,
                 cwd: Path = ROOT):
        self.command, self.env, self.log_path, self.port = command, env, log_path, port
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> float:
        """Start the process; return seconds until its first healthy answer."""
        self.launch()
        return self.wait_healthy()

    def launch(self) -> None:
        self.started_at = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self) -> float:
        """Seconds from launch to the first healthy answer."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}; "
                                   f"see {self.log_path}")
            if self._healthy():
                return time.perf_counter() - self.started_at
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not healthy within {START_TIMEOUT_S} s; see {self.log_path}")

    def _healthy(self) -> bool:
        try:
            status, _ = self.request("GET", self.health_path, timeout_s=5)
            return status == 200
        except (OSError, http.client.HTTPException):
            return False

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout_s: float = REQUEST_TIMEOUT_S):
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def removal(self, filename: str, data: bytes) -> Removal:
        raise NotImplementedError

    def send(self, removal: Removal) -> bytes:
        """The answer's body; a status other than 200 raises."""
        status, answer = self.request("POST", removal.path, removal.body,
                                      {"Content-Type": removal.content_type})
        if status != 200:
            raise RuntimeError(f"{self.name} answered {status}: {answer[:200]!r}")
        return answer

    def remove_background(self, filename: str, data: bytes) -> bytes:
        return self.send(self.removal(filename, data))

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            # The whole session: gunicorn's worker, any helper a server forked.
            stop_group(self.process)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class OurService(Server):
    """`make run`'s command and environment, bound to loopback instead of 0.0.0.0."""

    name = "isnet-wsgi"
    health_path = "/api/bg/health"

    @classmethod
    def create(cls, model_path: Path, log_dir: Path, config=None):
        """As `make run` starts it, or at a frontier point (bench/configs.py Config)."""
        port = free_port()
        if config is None:
            env = {**MAKE_RUN_ENV, **os.environ}
        else:
            env = config.process_env(dict(os.environ))
            if env is None:
                raise RuntimeError(f"{config.allocator} is not installed (see bench/README.md)")
            env.update(config.service_env())
        env.update({"PORT": str(port), "MODEL_PATH": str(model_path), "PYTHONUNBUFFERED": "1",
                    "ORT_DISABLE_TELEMETRY": "1"})
        env.pop("API_KEY", None)
        # NOTE: a command-line --bind overrides gunicorn.conf.py's 0.0.0.0.
        command = [str(GUNICORN), "-c", "gunicorn.conf.py", "--bind", f"{HOST}:{port}"]
        return cls(command, env, log_dir / f"isnet-wsgi-{port}.log", port)

    def removal(self, filename: str, data: bytes) -> Removal:
        return Removal("/api/bg/remove", *multipart_body(data, filename))

    def worker_pids(self) -> list[int]:
        return procfs.children(self.pid)

    def status(self) -> dict:
        return json.loads(self.request("GET", "/api/bg/status", timeout_s=10)[1])


class Rembg(Server):
    """`rembg s --no-ui` from its own venv, offline, on the same ONNX file."""

    name = "rembg"
    health_path = "/api"  # FastAPI's docs page: answers once uvicorn is up

    @classmethod
    def create(cls, model_path: Path, log_dir: Path):
        port = free_port()
        env = {**os.environ, "U2NET_HOME": str(model_path.parent), "ORT_DISABLE_TELEMETRY": "1",
               "PYTHONUNBUFFERED": "1",
               # rembg opens a browser on start-up; make that a no-op command.
               "BROWSER": "true"}
        for name in list(env):
            if name.startswith("MALLOC_") or name == "LD_PRELOAD":
                env.pop(name)
        command = [str(REMBG_VENV / "bin" / "rembg"), "s", "--no-ui", "--host", HOST,
                   "--port", str(port), "--log_level", "warning"]
        server = cls(command, env, log_dir / f"rembg-{port}.log", port)
        server.model_path = model_path
        return server

    def removal(self, filename: str, data: bytes) -> Removal:
        extras = urllib.parse.quote(json.dumps({"model_path": str(self.model_path)}))
        return Removal(f"/api/remove?extras={extras}",
                       *multipart_body(data, filename, {"model": "dis_custom"}))


def rembg_installed() -> bool:
    return (REMBG_VENV / "bin" / "rembg").exists()


def install_rembg(timeout_s: int = 1200) -> None:
    """rembg in its own venv (git-ignored), with pip as the machine configures it."""
    print(f"installing {REMBG_REQUIREMENT} into {REMBG_VENV} (once) ...")
    subprocess.run(["python3", "-m", "venv", str(REMBG_VENV)], check=True, timeout=120)
    subprocess.run([str(REMBG_VENV / "bin" / "pip"), "install", "--quiet", REMBG_REQUIREMENT],
                   check=True, timeout=timeout_s)
