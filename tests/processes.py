"""Processes the tests start: each in a process group of its own, stopped whole.

A server under a tracer (strace -f gunicorn) or a shell (unshare sh -c ...)
is several processes; signalling only the one the test started leaves the
rest running. ``process_group`` signals the whole group, also when the test
fails, and ``leftovers`` finds anything started by this test session that is
still alive, so the suite can fail on it (tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

# NOTE: the bench stops its servers the same way; both use bench/harness.py's.
from bench.harness import process_group, run, stop_group  # noqa: F401  (tests import them from here)

# Set in the test session's environment; every process the tests start
# inherits it, whoever starts it, so /proc/PID/environ names its owner.
SESSION_VARIABLE = "ISNET_TEST_SESSION"


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

