"""The container's memory and CPU limits, read from fake cgroup trees (v1 and v2)."""

from __future__ import annotations

import pytest

from isnet_wsgi import config
from isnet_wsgi.runtime import cgroup


def fake_cgroup_tree(tmp_path, monkeypatch, proc_lines: str, files: dict[str, str]):
    """A /proc/self/cgroup and a /sys/fs/cgroup tree with the given files."""
    for relative, text in files.items():
        path = tmp_path / "sys" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(cgroup, "_V1_ROOTS", {"memory": (str(tmp_path / "sys" / "memory"),),
                                              "cpu": (str(tmp_path / "sys" / "cpu,cpuacct"),)})
    monkeypatch.setattr(cgroup, "_V2_ROOTS", (str(tmp_path / "sys" / "unified"),))
    proc = tmp_path / "cgroup"
    proc.write_text(proc_lines)
    return str(proc)


def test_v1_memory_limit_is_the_smallest_on_the_way_up(tmp_path, monkeypatch):
    proc = fake_cgroup_tree(tmp_path, monkeypatch, "4:memory:/box/service\n0::/\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",  # the root: no limit
        "memory/box/memory.limit_in_bytes": str(512 * 2**20),
        "memory/box/service/memory.limit_in_bytes": str(256 * 2**20),
    })
    assert cgroup.memory_limit_mb(proc) == 256.0
    (tmp_path / "sys/memory/box/memory.limit_in_bytes").write_text(str(200 * 2**20))
    assert cgroup.memory_limit_mb(proc) == 200.0


def test_v2_memory_max_and_no_limit(tmp_path, monkeypatch):
    proc = fake_cgroup_tree(tmp_path, monkeypatch, "0::/app\n", {
        "unified/app/memory.max": "max\n"})
    assert cgroup.memory_limit_mb(proc) is None
    (tmp_path / "sys/unified/app/memory.max").write_text(f"{300 * 2**20}\n")
    assert cgroup.memory_limit_mb(proc) == 300.0


def test_no_cgroup_file_means_no_limit(tmp_path):
    assert cgroup.memory_limit_mb(str(tmp_path / "missing")) is None
    assert cgroup.cpu_limit(str(tmp_path / "missing")) is None


def test_v1_cpu_quota_over_its_period_the_smallest_on_the_way_up(tmp_path, monkeypatch):
    proc = fake_cgroup_tree(tmp_path, monkeypatch, "2:cpu,cpuacct:/box/service\n3:cpuset:/\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",  # the root: no quota
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/box/cpu.cfs_quota_us": "250000\n",
        "cpu,cpuacct/box/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/box/service/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/box/service/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup.cpu_limit(proc) == 2.5
    (tmp_path / "sys/cpu,cpuacct/box/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup.cpu_limit(proc) is None


def test_v2_cpu_max(tmp_path, monkeypatch):
    proc = fake_cgroup_tree(tmp_path, monkeypatch, "0::/app\n", {
        "unified/app/cpu.max": "max 100000\n"})
    assert cgroup.cpu_limit(proc) is None
    (tmp_path / "sys/unified/app/cpu.max").write_text("150000 100000\n")
    assert cgroup.cpu_limit(proc) == 1.5


@pytest.mark.parametrize(("quota", "threads"), [(None, 2), (8.0, 2), (1.5, 1), (0.5, 1)])
def test_default_threads_are_whole_cpus_of_the_quota(monkeypatch, quota, threads):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(cgroup, "cpu_limit", lambda: quota)
    assert config.Settings.from_env({}).intra_op_threads == threads
    assert config.Settings.from_env({"INTRA_OP_THREADS": "2"}).intra_op_threads == 2
