"""Builds bench/thpalign.c (an LD_PRELOAD library; see its comment) for the bench.

`python -m bench.thpalign` prints the library's path, building it first if
needed, with the C compiler on this machine (gcc or cc), into
~/.cache/isnet-wsgi under the source's digest. ``bench.ab`` accepts
``LD_PRELOAD=thpalign`` in a variant for it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "thpalign.c"
CACHE = Path.home() / ".cache" / "isnet-wsgi"


class NoCompiler(RuntimeError):
    """No C compiler on this machine."""


def library(cache: Path = CACHE) -> Path:
    """The built library's path, built now if it is not there yet."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    built = cache / f"thpalign-{digest}.so"
    if built.exists():
        return built
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise NoCompiler("bench.thpalign needs gcc or cc")
    cache.mkdir(parents=True, exist_ok=True)
    partial = built.with_suffix(".so.partial")
    subprocess.run([compiler, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(partial),
                    str(SOURCE), "-lpthread", "-ldl"], check=True, timeout=120)
    partial.replace(built)
    return built


if __name__ == "__main__":
    print(library())
    sys.exit(0)
