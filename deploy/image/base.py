"""A local stand-in for python:3.11-slim-bookworm, for machines with no image registry.

debootstrap makes a minimal Debian bookworm root filesystem from the Debian
mirror apt already uses here (read from apt's sources, so no host is named
in this repository). Python 3.11 gets the layout the real image has: `python`
and `pip` first on PATH, and `pip install` allowed. That comes from a venv at
/opt/python, not from Debian's python3 with PIP_BREAK_SYSTEM_PACKAGES: pip's
packages then never mix with the python3-* packages apt pulls in (npm does,
in the build stage), which is what the real image's /usr/local gives too.

The root filesystem is kept as a tarball under CACHE_DIR, keyed by this
file's content, and imported into buildah's store as BASE_IMAGE-<key>.
"""

from __future__ import annotations

import glob
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.image.buildah import CACHE_DIR, buildah, image_exists

SUITE = "bookworm"
# The real slim image has ca-certificates too; python3-venv brings python3.11.
PACKAGES = ("python3-venv", "ca-certificates")
VENV = "/opt/python"
ENVIRONMENT = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
BASE_IMAGE = "localhost/isnet-wsgi-base"
APT_SOURCE_FILES = ("/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*")))


def recipe_key() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def base_image() -> str:
    """The name of the local base image, made (and cached) if it is missing."""
    name = f"{BASE_IMAGE}:{SUITE}-{recipe_key()}"
    if image_exists(name):
        return name
    tarball = CACHE_DIR / "base" / f"{SUITE}-{recipe_key()}.tar"
    if not tarball.is_file():
        make_root_tarball(tarball)
    import_tarball(tarball, name)
    return name


def debian_sources() -> list[tuple[str, str, str]]:
    """(uri, suite, components) of this host's apt entries for SUITE and its
    -updates and -security suites, in one-line or deb822 form."""
    suites = {SUITE, f"{SUITE}-updates", f"{SUITE}-security"}
    found = []
    for path in APT_SOURCE_FILES:
        text = Path(path).read_text() if Path(path).is_file() else ""
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M))
                if fields.get("Types", "").split()[:1] == ["deb"]:
                    for uri in fields.get("URIs", "").split():
                        found += [(uri, suite, fields.get("Components", "main"))
                                  for suite in fields.get("Suites", "").split()]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb":
                    found.append((words[1], words[2], " ".join(words[3:]) or "main"))
    found = [entry for entry in found if entry[1] in suites]
    if not any(suite == SUITE for _, suite, _ in found):
        sys.exit(f"error: apt has no 'deb ... {SUITE}' source to build the base image from")
    return found


def make_root_tarball(tarball: Path) -> None:
    sources = debian_sources()
    mirror = next(uri for uri, suite, _ in sources if suite == SUITE)
    # Outside the checkout: while debootstrap runs, /proc and /sys are mounted in it.
    rootfs = Path(tempfile.mkdtemp(prefix="isnet-wsgi-rootfs-", dir="/var/tmp"))
    debs = CACHE_DIR / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        f"--cache-dir={debs}", SUITE, str(rootfs), mirror], check=True)
        configure_root(rootfs, sources)
        part = tarball.with_suffix(".part")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(part), "."], check=True)
        part.rename(tarball)
        for stale in tarball.parent.glob(f"{SUITE}-*.tar"):
            if stale != tarball:  # made by an earlier version of this file
                stale.unlink()
    finally:
        unmount_below(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"base root filesystem: {tarball.stat().st_size / 1e6:.0f} MB in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


def configure_root(rootfs: Path, sources: list[tuple[str, str, str]]) -> None:
    """The venv on PATH, apt pointed at the same suites as the host, no apt lists."""
    subprocess.run(["chroot", str(rootfs), "python3", "-m", "venv", VENV], check=True)
    lines = [f"deb {uri} {suite} {components}" for uri, suite, components in sources]
    (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True)
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def unmount_below(rootfs: Path) -> None:
    """debootstrap mounts /proc and /sys in the target; a failed run can leave them."""
    prefix = str(rootfs.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def import_tarball(tarball: Path, name: str) -> None:
    container = buildah("from", "scratch", capture=True)
    try:
        buildah("add", container, str(tarball), "/")
        settings = [arg for key, value in ENVIRONMENT.items() for arg in ("--env", f"{key}={value}")]
        buildah("config", *settings, "--cmd", "python", container)
        buildah("commit", "--quiet", container, name)
    finally:
        buildah("rm", container)
