"""Serve requests under strace, inside a network namespace; run by test_offline.py.

    unshare --net sh -c 'ip link set lo up && python -m tests.system.offline_driver LOG DIR'

Starts gunicorn as `make run` does (without ORT_DISABLE_TELEMETRY in the
environment: the service must switch telemetry off itself), traces every
connect/sendto/sendmsg of the master and its workers into LOG, answers a
few requests, then waits, since onnxruntime's telemetry was seen resolving a
host some seconds after import.
"""

import sys
import time
from pathlib import Path

from tests.helpers import photo_bytes
from tests.system.server import running_gunicorn, server_env

# How long to keep serving after the requests, for late background calls.
LINGER_S = 8


def main(trace_log: str, work_dir: str) -> None:
    env = server_env()
    env.pop("ORT_DISABLE_TELEMETRY")
    strace = ("strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg",
              "-o", trace_log)
    with running_gunicorn(Path(work_dir), command_prefix=strace, env=env) as server:
        assert server.json("/api/bg/health")["status"] == "healthy"
        status, _, _ = server.upload("/api/bg/remove", photo_bytes("camera.png"), "camera.png")
        assert status == 200, status
        time.sleep(LINGER_S)
        assert server.json("/api/bg/health")["status"] == "healthy"
    print("served")


if __name__ == "__main__":
    main(*sys.argv[1:3])
