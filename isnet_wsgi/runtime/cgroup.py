"""The container's limits, read from this process's cgroups (v1 and v2).

Each limit is the smallest on the way up to its hierarchy's root, since a
parent's limit binds its children too (a container's limit sits on a group
above the one a supervisor may put the service in). Linux only; where
nothing can be read there is no limit (None).
"""

from __future__ import annotations

import os

PROC_CGROUP = "/proc/self/cgroup"
# Where each hierarchy is mounted: v1 has one per controller (cpu often
# shares its mount with cpuacct), v2 one for all.
_V1_ROOTS = {"memory": ("/sys/fs/cgroup/memory",),
             "cpu": ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct")}
_V2_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
# v1 writes "no limit" as the largest page-aligned 64-bit value; v2 as "max".
_NO_LIMIT_BYTES = 1 << 60


def memory_limit_mb(proc_cgroup: str = PROC_CGROUP) -> float | None:
    """The memory limit of this process's cgroup, in MiB; None when there is none."""
    limits = []
    for version, group in _groups(proc_cgroup, "memory"):
        text = _read(group, "memory.limit_in_bytes" if version == 1 else "memory.max")
        if text is not None and text.isdigit() and int(text) < _NO_LIMIT_BYTES:
            limits.append(int(text))
    return round(min(limits) / (1024 * 1024), 1) if limits else None


def cpu_limit(proc_cgroup: str = PROC_CGROUP) -> float | None:
    """The CPUs this process's cgroup may use per period (its CFS quota over
    its period; ``docker --cpus``, a Kubernetes CPU limit); None when unlimited.

    NOTE: a quota leaves every CPU of the host visible (sched_getaffinity
    counts them all); only the time the group's threads run together is capped.
    """
    limits = []
    for version, group in _groups(proc_cgroup, "cpu"):
        if version == 1:
            quota, period = _read(group, "cpu.cfs_quota_us"), _read(group, "cpu.cfs_period_us")
        else:
            quota, _, period = (_read(group, "cpu.max") or "").partition(" ")
        if quota and quota.isdigit() and period and period.isdigit() and int(period):
            limits.append(int(quota) / int(period))  # v1 "-1", v2 "max": no limit
    return min(limits) if limits else None


def _groups(proc_cgroup: str, controller: str) -> list[tuple[int, str]]:
    """(cgroup version, directory) of this process's group for ``controller``
    and each group above it, in every hierarchy where it is mounted.

    NOTE: inside a container with its own cgroup namespace the path is "/",
    and the mount's root is the container's group: both cases read right.
    """
    try:
        with open(proc_cgroup) as lines:
            entries = [line.rstrip("\n").split(":", 2) for line in lines]
    except OSError:
        return []
    groups = []
    for _, controllers, path in (entry for entry in entries if len(entry) == 3):
        if controller in controllers.split(","):
            version, roots = 1, _V1_ROOTS[controller]
        elif controllers == "":
            version, roots = 2, _V2_ROOTS
        else:
            continue
        parts = [part for part in path.split("/") if part]
        groups += [(version, os.path.join(root, *parts[:depth]))
                   for root in roots for depth in range(len(parts), -1, -1)]
    return groups


def _read(group: str, file_name: str) -> str | None:
    try:
        with open(os.path.join(group, file_name)) as limit_file:
            return limit_file.read().strip()
    except OSError:
        return None
