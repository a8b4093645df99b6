"""Processes the tests start: each in a process group of its own, stopped whole.

A server under a tracer (strace -f gunicorn) or a shell (unshare sh -c ...)
is several processes; signalling only the one the test started leaves the
rest running. ``process_group`` signals the whole group, also when the test
fails, and ``leftovers`` finds anything started by this test session that is
still alive, so the suite can fail on it (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

# Set in the test session's environment; every process the tests start
# inherits it, whoever starts it, so /proc/PID/environ names its owner.
SESSION_VARIABLE = "ISNET_TEST_SESSION"


@contextmanager
def process_group(args, *, stop_signal: int = signal.SIGTERM, stop_timeout_s: float = 30,
                  **popen_kwargs):
    """``Popen(args)`` in a new session; on exit its whole group is stopped."""
    process = subprocess.Popen(args, start_new_session=True, **popen_kwargs)
    try:
        yield process
    finally:
        stop_group(process, stop_signal, stop_timeout_s)


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


def run(args, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(capture_output=True, text=True)``, the group stopped after."""
    with process_group(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **kwargs) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def leftovers(session_id: str) -> dict[int, str]:
    """pid -> command line of every live process started under this session id."""
    marker = f"{SESSION_VARIABLE}={session_id}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            if (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue  # a zombie holds no resources; its parent reaps it
            found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
