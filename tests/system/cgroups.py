"""Child cgroups for the system tests that run the service under a container's limits."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


def make_child(controller: str, name: str) -> tuple[Path, int]:
    """A new child of this process's cgroup for ``controller`` ("memory",
    "cpu"): its directory and the cgroup version (1 or 2).

    Needs root; raises OSError (or StopIteration: no v2 entry) where no
    group can be made.
    """
    own_lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1_root = _ROOT / controller
    for line in own_lines:
        _, controllers, own = line.split(":", 2)
        if controller in controllers.split(",") and v1_root.is_dir():
            group = v1_root / own.lstrip("/") / name
            group.mkdir()
            return group, 1
    own = next(line.split(":", 2)[2] for line in own_lines if line.startswith("0::"))
    parent = _ROOT / own.lstrip("/")
    if controller not in (parent / "cgroup.subtree_control").read_text().split():
        (parent / "cgroup.subtree_control").write_text(f"+{controller}")
    group = parent / name
    group.mkdir()
    return group, 2


def remove(group: Path) -> None:
    """Move anything still inside to the parent, then remove the group."""
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            (group.parent / "cgroup.procs").write_text(pid)
        except OSError:
            pass  # it exited meanwhile
    group.rmdir()


def enter_command(group: Path) -> tuple[str, ...]:
    """A command prefix: sh puts itself in the group, then becomes the command,
    so a server and every process it forks are inside before they start."""
    return ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group))
