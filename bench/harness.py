"""What the bench and the tests share to run the service and time it.

The service's start-up environment (malloc.env), process groups stopped
whole, a free loopback port, upload bodies as curl sends them, a server
process started, waited for, asked and stopped, and one loop that times
requests to several services (or bare sessions) in turn.

NOTE: tests/ builds on this module (tests/processes.py, tests/helpers.py,
tests/system/server.py) and bench/ never imports tests/: the bench is a tool
a user may run from a checkout without its test tools. Standard library and
the project's own files only.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# The malloc variables the Makefile exports and the Dockerfile sets.
MALLOC_ENV_FILE = ROOT / "malloc.env"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 120


# --- The service's environment ------------------------------------------------

def malloc_env(path: Path = MALLOC_ENV_FILE) -> dict[str, str]:
    """NAME -> value of each `NAME=VALUE` line of malloc.env (comments skipped)."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.isidentifier() or not value or " " in line:
            raise ValueError(f"{path}:{number}: not NAME=VALUE: {line!r}")
        env[name] = value
    return env


def service_env(base: dict[str, str] | None = None, **settings: str) -> dict[str, str]:
    """The environment `make run` gives gunicorn, on top of ``base`` (default:
    this process's), with ``settings`` last. API_KEY is dropped: a key in the
    shell of whoever runs the bench or the tests must not change what they see."""
    env = {name: value for name, value in (os.environ if base is None else base).items()
           if name != "API_KEY"}
    env.update(malloc_env())
    env.update({"ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"})
    env.update(settings)
    return env


# --- Processes ----------------------------------------------------------------

@contextmanager
def process_group(args, *, stop_signal: int = signal.SIGTERM, stop_timeout_s: float = 30,
                  **popen_kwargs):
    """``Popen(args)`` in a new session; on exit its whole group is stopped."""
    process = subprocess.Popen(args, start_new_session=True, **popen_kwargs)
    try:
        yield process
    finally:
        stop_group(process, stop_signal, stop_timeout_s)


def run(args, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(capture_output=True, text=True)``, the group stopped after."""
    with process_group(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **kwargs) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def stop_group(process: subprocess.Popen, stop_signal: int = signal.SIGTERM,
               timeout_s: float = 30) -> None:
    """Signal the group, wait for its leader, then kill what is left of it."""
    _signal_group(process.pid, stop_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process.pid, signal.SIGKILL)  # a worker whose master died, say
    process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (none once it is gone)."""
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# --- HTTP -----------------------------------------------------------------------

def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None, timeout_s: float = REQUEST_TIMEOUT_S):
    """One exchange with a server on loopback: (status, headers, body)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def multipart_body(data: bytes, filename: str, fields: dict[str, str] | None = None, *,
                   disposition: str | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body as curl sends it: fields, then the file.

    ``disposition`` replaces the file part's Content-Disposition value, to
    send names exactly as a hostile client would.
    """
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in (fields or {}).items()]
    disposition = disposition or f'form-data; name="file"; filename="{filename}"'
    parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclasses.dataclass(frozen=True)
class Removal:
    """One background-removal request, built before the clock starts: a
    client has its body ready before it sends it, so only the exchange is timed."""

    path: str
    body: bytes
    content_type: str


# --- A server process -------------------------------------------------------------

class Server:
    """A server process group on loopback: launch, wait until healthy, post photos, stop."""

    name = "isnet-wsgi"
    health_path = "/api/bg/health"
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, port: int,
                 cwd: Path = ROOT):
        self.command, self.env, self.log_path, self.port = command, env, log_path, port
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> float:
        """Launch the process; return seconds until its first healthy answer."""
        self.launch()
        return self.wait_healthy()

    def launch(self) -> None:
        self.started_at = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Seconds from launch to the first healthy answer."""
        timeout_s = timeout_s or self.start_timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}; "
                                   f"see {self.log_path}")
            try:
                if self.request("GET", self.health_path, timeout_s=5)[0] == 200:
                    return time.perf_counter() - self.started_at
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not healthy within {timeout_s} s; see {self.log_path}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout_s: float = REQUEST_TIMEOUT_S):
        return http_request(self.port, method, path, body, headers, timeout_s)

    def removal(self, filename: str, data: bytes) -> Removal:
        return Removal("/api/bg/remove", *multipart_body(data, filename))

    def send(self, removal: Removal) -> bytes:
        """The answer's body; a status other than 200 raises."""
        status, _, answer = self.request("POST", removal.path, removal.body,
                                         {"Content-Type": removal.content_type})
        if status != 200:
            raise RuntimeError(f"{self.name} answered {status}: {answer[:200]!r}")
        return answer

    def remove_background(self, filename: str, data: bytes) -> bytes:
        return self.send(self.removal(filename, data))

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The master's children (gunicorn's one sync worker)."""
        return children(self.pid)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)  # the whole session: gunicorn's worker too

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def service(model: Path, log_dir: Path, *, env: dict[str, str] | None = None,
            checkout: Path = ROOT, config: str = "gunicorn.conf.py",
            label: str = "isnet-wsgi") -> Server:
    """The service from ``checkout`` on ``model`` as `make run` starts it (malloc.env,
    gunicorn.conf.py), bound to loopback, with ``env`` on top; ``config`` is
    another gunicorn config file (bench/breakdown_gunicorn.py wraps the service's)."""
    port = free_port()
    settings = {"MODEL_PATH": str(model), **(env or {}), "PORT": str(port)}
    # NOTE: a command-line --bind overrides gunicorn.conf.py's 0.0.0.0. The
    # process starts in the checkout, not with --chdir alone: gunicorn puts its
    # working directory first on sys.path and reads the config (which imports
    # isnet_wsgi) before it applies --chdir, so every variant would otherwise
    # run this checkout's code.
    command = [str(GUNICORN), "-c", str(checkout / config), "--chdir", str(checkout),
               "--bind", f"{HOST}:{port}"]
    server = Server(command, service_env(**settings), log_dir / f"{label}-{port}.log", port,
                    cwd=checkout)
    server.name = label
    return server


# --- Timing -----------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    """One contender in the rotation: ``prepare(filename, data)`` builds what
    is sent before the clock starts; ``exchange(sent)`` is timed and returns
    the answer (bytes), or the seconds a child process timed itself (float:
    a bare session's run without the pipe). ``counter`` (minor page faults of
    a worker, say) is read around each exchange."""

    label: str
    prepare: Callable[[str, bytes], object]
    exchange: Callable[[object], object]
    counter: Callable[[], int] | None = None


@dataclasses.dataclass
class Timings:
    seconds: dict[str, list[float]]
    counts: dict[str, list[int]]
    # photo -> label -> answer bytes
    answers: dict[str, dict[str, bytes]]


def interleave(steps: list[Step], uploads: list[tuple[str, bytes]], rounds: int, *,
               gap_s: float = 0.0, after_round: Callable[[int, Timings], None] | None = None
               ) -> Timings:
    """Every photo to every step, ``rounds`` times, the order rotated per photo
    (A B C, B C A, ...): a burst of load from another job falls on all alike,
    and each keeps its place in the list only a third of the time.

    ``gap_s`` leaves the machine idle before each timed exchange, as a request
    after a pause meets it; 0 is back to back.
    """
    timings = Timings({step.label: [] for step in steps}, {step.label: [] for step in steps}, {})
    for round_index in range(rounds):
        for index, (filename, data) in enumerate(uploads):
            shift = (round_index + index) % len(steps)
            for step in steps[shift:] + steps[:shift]:
                sent = step.prepare(filename, data)
                time.sleep(gap_s)
                before = step.counter() if step.counter else 0
                started = time.perf_counter()
                answer = step.exchange(sent)
                spent = time.perf_counter() - started
                if step.counter:
                    timings.counts[step.label].append(step.counter() - before)
                if isinstance(answer, float):
                    spent = answer
                else:
                    timings.answers.setdefault(filename, {})[step.label] = answer
                timings.seconds[step.label].append(spent)
        if after_round:
            after_round(round_index, timings)
    return timings
