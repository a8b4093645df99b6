"""Install size on disk: what a user installs to run each server.

Ours: the distributions in requirements.txt and everything they require,
read from the project venv's metadata (the venv also holds test tools that a
deployment does not install). rembg: its whole venv (`pip install
"rembg[cpu,cli]"`, nothing else), less pip and setuptools, which every venv has.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
from pathlib import Path

from bench import procfs

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^[A-Za-z0-9._-]+")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-") or "extra ==" in line:
            continue
        match = _NAME.match(line)
        if match:
            names.append(match.group(0))
    return names


def runtime_closure() -> set[str]:
    """requirements.txt and its installed dependencies (extras left out)."""
    todo = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    seen: set[str] = set()
    while todo:
        name = _normalise(todo.pop())
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a platform-only dependency not installed here
        seen.add(name)
        todo += _requirement_names(requires)
    return seen


def dist_mb(name: str) -> float:
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total / 2**20


def ours_mb() -> float:
    return round(sum(dist_mb(name) for name in runtime_closure()), 1)


def rembg_mb(venv: Path) -> float:
    total = procfs.du_mb(venv)
    for site in venv.glob("lib/python*/site-packages"):
        for common in ("pip", "setuptools", "_distutils_hack"):
            for path in site.glob(f"{common}*"):
                total -= procfs.du_mb(path) if path.is_dir() else path.stat().st_size / 2**20
    return round(total, 1)
