"""The service as `make run` starts it, inside a cgroup with a CPU quota of one CPU.

A quota (docker --cpus, a Kubernetes CPU limit) leaves every CPU of the
host visible, so the service must take its thread count from the quota.
Needs root and a cpu cgroup it may create a child of (v1 cpu.cfs_quota_us
or v2 cpu.max), as in a container with a CPU limit.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import open_image, photo_bytes
from tests.system import cgroups
from tests.system.server import running_gunicorn
from tests.system.test_decode_budget import make_run_env

PERIOD_US = 100_000


@pytest.fixture
def one_cpu_group():
    """A child cgroup allowed one CPU per period."""
    try:
        group, version = cgroups.make_child("cpu", f"isnet-cpu-test-{os.getpid()}")
    except (OSError, StopIteration) as error:
        pytest.fail(f"this test needs root and a cpu cgroup it may create a child of "
                    f"(cgroup v1 or v2): {error!r}")
    try:
        if version == 1:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(PERIOD_US))
        else:
            (group / "cpu.max").write_text(f"{PERIOD_US} {PERIOD_US}")
        yield group
    finally:
        cgroups.remove(group)


def test_a_one_cpu_quota_gives_one_thread(tmp_path, one_cpu_group):
    assert len(os.sched_getaffinity(0)) >= 2, "the quota must be below the CPUs visible"
    # The master reads its settings inside the group; the worker it forks is inside too.
    with running_gunicorn(tmp_path, command_prefix=cgroups.enter_command(one_cpu_group),
                          env=make_run_env(),
                          CACHE_MB="0") as server:
        status = server.json("/api/bg/status")
        assert (status["threads"], status["cpu_quota"]) == (1, 1.0)
        assert set(server.worker_pids()) <= set(map(int, (one_cpu_group / "cgroup.procs")
                                                    .read_text().split()))
        status, _, answer = server.upload("/api/bg/remove", photo_bytes("astronaut.png"),
                                          "astronaut.png")
        assert status == 200
        assert open_image(answer).mode == "RGBA"
