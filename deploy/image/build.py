"""`make image`: build the project's Dockerfile, both stages, with buildah.

    python -m deploy.image.build

The base is the local bookworm of deploy/image/base.py (no registry needed),
passed as the Dockerfile's BASE_IMAGE. The build's RUN steps see the host's
CA bundle and pip/npm configuration as read-only volumes: outbound TLS may go
through an intercepting proxy whose CA only the host knows. That is this
builder's concern, not the Dockerfile's. Download caches (pip, npm, the
model's source package) are volumes under CACHE_DIR, and unchanged steps
come from buildah's layer cache.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from deploy.image import base
from deploy.image.buildah import CACHE_DIR, IMAGE, ISOLATION, ROOT, buildah, ensure_tools

HOME = Path.home()
# Host files a pip or npm step may need, each mounted at the same path inside.
HOST_CONFIG = (
    Path("/etc/ssl/certs/ca-certificates.crt"),
    Path("/etc/pip.conf"),
    Path("/etc/xdg/pip"),
    HOME / ".config/pip",
    HOME / ".pip",
    Path("/etc/npmrc"),
    HOME / ".npmrc",
)
# The build stage runs as root: its caches live under /root. apt keeps the
# .debs it fetched in its archive folder (the local base has no docker-clean).
CACHE_MOUNTS = {"root-cache": "/root/.cache", "npm": "/root/.npm", "apt": "/var/cache/apt/archives"}


def main() -> int:
    ensure_tools()
    started = time.perf_counter()
    base_image = base.base_image()
    buildah("bud", "--isolation", ISOLATION, "--network", "host", "--layers",
            # Docker's format keeps HEALTHCHECK (OCI's config has no field for it).
            "--format", "docker", "--pull=never",
            "--build-arg", f"BASE_IMAGE={base_image}",
            *volume_args(), "--tag", IMAGE, "--file", str(ROOT / "Dockerfile"), str(ROOT))
    print(f"built {IMAGE} on {base_image} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    remove_stale_bases(base_image)
    return 0


def remove_stale_bases(current: str) -> None:
    """Bases made by earlier versions of base.py: nothing builds on them again."""
    names = buildah("images", "--format", "{{.Name}}:{{.Tag}}", capture=True).split()
    stale = [name for name in names if name.startswith(f"{base.BASE_IMAGE}:") and name != current]
    if stale:
        buildah("rmi", *stale)


def volume_args() -> list[str]:
    volumes = [f"{path}:{path}:ro" for path in HOST_CONFIG if path.exists()]
    pip_environment = pip_environment_config()
    if pip_environment is not None:
        # The venv's own pip.conf ranks above the global and user files, as
        # PIP_* variables do.
        volumes.append(f"{pip_environment}:{base.VENV}/pip.conf:ro")
    for name, target in CACHE_MOUNTS.items():
        (CACHE_DIR / name).mkdir(parents=True, exist_ok=True)
        volumes.append(f"{CACHE_DIR / name}:{target}")
    return [arg for volume in volumes for arg in ("--volume", volume)]


def pip_environment_config() -> Path | None:
    """This process's PIP_* variables as a pip config file (PIP_DEFAULT_TIMEOUT
    is `default-timeout`), since a build step does not inherit the environment."""
    settings = {name[4:].lower().replace("_", "-"): value
                for name, value in sorted(os.environ.items()) if name.startswith("PIP_")}
    if not settings:
        return None
    path = CACHE_DIR / "pip-environment.conf"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text("[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    return path


if __name__ == "__main__":
    sys.exit(main())
