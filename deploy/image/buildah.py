"""What the image build and its smoke test share: names, the cache, buildah itself.

buildah builds the Dockerfile without a Docker daemon, as root, with `chroot`
isolation: no user namespaces needed, and the containers share the host's
network, so the service is reached on 127.0.0.1. Its store is the overlay
driver's where the kernel can mount overlayfs there, else vfs, which works
anywhere but copies the whole root filesystem at every step (a cold build
wrote 18.9 GB with vfs). Each driver has its own store: a store made by one
refuses the other.
"""

from __future__ import annotations

import functools
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
STORE = Path("/var/lib/containers/isnet-wsgi")
ISOLATION = "chroot"
# Debian packages of the tools, installed when missing (CI starts bare, as root).
TOOL_PACKAGES = {"buildah": "buildah", "debootstrap": "debootstrap"}


def buildah_command(*args: str) -> list[str]:
    return ["buildah", *storage_options(), *args]


def buildah(*args: str, capture: bool = False) -> str:
    """Run `buildah ARGS` on this project's store; its output if `capture`, else it streams."""
    done = subprocess.run(buildah_command(*args), check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout.strip() if capture else ""


def image_exists(name: str) -> bool:
    return subprocess.run(buildah_command("inspect", "--type", "image", name), capture_output=True).returncode == 0


@functools.cache
def storage_options() -> tuple[str, ...]:
    """overlay if a container's root can be mounted with it here, else vfs."""
    overlay, vfs = _store("overlay"), _store("vfs")
    return overlay if _can_mount(overlay) else vfs


def _store(driver: str) -> tuple[str, ...]:
    return ("--storage-driver", driver, "--root", str(STORE / driver), "--runroot", f"/run/containers/isnet-wsgi-{driver}")


def _can_mount(options: tuple[str, ...]) -> bool:
    made = subprocess.run(["buildah", *options, "from", "scratch"], capture_output=True, text=True)
    if made.returncode != 0:
        return False
    container = made.stdout.strip()
    mounted = subprocess.run(["buildah", *options, "mount", container], capture_output=True)
    subprocess.run(["buildah", *options, "rm", container], capture_output=True)
    return mounted.returncode == 0


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
