"""What the image build and its smoke test share: names, the cache, buildah itself.

buildah builds the Dockerfile without a Docker daemon. On a machine without
one (CI, this repository's dev boxes) it runs with the `vfs` storage driver
and `chroot` isolation: neither needs overlayfs or user namespaces, and the
containers share the host's network, so the service is reached on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Ignored by git and .dockerignore: the base root filesystem and the download
# caches of the build (pip, npm, the model's source), kept between runs.
CACHE_DIR = ROOT / ".image-cache"
IMAGE = "localhost/isnet-wsgi:local"
ISOLATION = "chroot"
# Debian packages of the tools, installed when missing (CI starts bare, as root).
TOOL_PACKAGES = {"buildah": "buildah", "debootstrap": "debootstrap"}


def buildah(*args: str, capture: bool = False) -> str:
    """Run `buildah ARGS` on the vfs store; its output if `capture`, else it streams."""
    command = ["buildah", "--storage-driver", "vfs", *args]
    done = subprocess.run(command, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout.strip() if capture else ""


def image_exists(name: str) -> bool:
    command = ["buildah", "--storage-driver", "vfs", "inspect", "--type", "image", name]
    return subprocess.run(command, capture_output=True).returncode == 0


def inspect_image(name: str = IMAGE) -> dict:
    return json.loads(buildah("inspect", "--type", "image", name, capture=True))


def ensure_tools() -> None:
    """apt-get install buildah and debootstrap if either is missing."""
    missing = [package for tool, package in TOOL_PACKAGES.items() if shutil.which(tool) is None]
    if not missing:
        return
    print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True)
