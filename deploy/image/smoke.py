"""`make image-test`: run the built image as a deployment would, and check it serves.

    python -m deploy.image.smoke

The image's own CMD runs as the image's USER, in its WORKDIR, with its ENV,
all read from `buildah inspect`; only PORT is set, to a free port (the
service honours PORT, as Railway needs). The server is contacted on
127.0.0.1 only. Checks: /api/bg/health answers 200; a real photo posted to
/api/bg/remove comes back as a PNG with transparency; the image's HEALTHCHECK
command exits 0 against the server and non-zero against a closed port; every
gunicorn process runs as uid 10001; the model file in the image has the
sha256 of models/isnet-general-tiny.json. The last line lists what passed.
Everything started is stopped: the server's process group, the container.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from deploy.image.buildah import CACHE_DIR, IMAGE, ISOLATION, ROOT, buildah, buildah_command, inspect_image

PHOTO = ROOT / "tests/data/astronaut.png"
MANIFEST = ROOT / "models/isnet-general-tiny.json"
HEALTH_PATH = "/api/bg/health"
SERVICE_UID = 10001
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
# The model build's and the tests' packages: never in the runtime image.
BUILD_ONLY_MODULES = ("onnx", "pytest", "webtest", "hypothesis", "kubernetes_validate")
# The build context as buildah cuts it with .dockerignore: what the Dockerfile
# COPYs must be in it; local state, tests and a checkout's own model must not.
CONTEXT_NEEDS = ("requirements.txt", "requirements-build.txt", "gunicorn.conf.py", "isnet_wsgi/web/app.py",
                 "models/build.py", "models/isnet-general-tiny.json", "models/calibration")
CONTEXT_EXCLUDES = (".git", ".venv", ".image-cache", ".pytest_cache", "tests", "bench", "deploy",
                    "models/isnet-general-tiny.onnx")
CONTEXT_IMAGE = "localhost/isnet-wsgi-context-probe:local"
# Only loopback is contacted: no proxy from the environment applies.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the image's configuration a container runtime uses."""

    user: str
    workdir: str
    env: dict[str, str]
    cmd: list[str]  # ENTRYPOINT + CMD, as a runtime starts them
    healthcheck: list[str]

    @classmethod
    def of(cls, inspected: dict) -> ImageConfig:
        config = inspected["Docker"]["config"]
        test = (config.get("Healthcheck") or {}).get("Test") or ["NONE"]
        healthcheck = {"CMD": test[1:], "CMD-SHELL": ["/bin/sh", "-c", *test[1:]]}.get(test[0])
        if not healthcheck:
            sys.exit(f"error: {IMAGE} has no HEALTHCHECK command ({test})")
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        return cls(user=config.get("User") or "root", workdir=config.get("WorkingDir") or "/",
                   env=env, cmd=[*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])],
                   healthcheck=healthcheck)


def main() -> int:
    config = ImageConfig.of(inspect_image())
    passed = [check_build_context()]
    container = buildah("from", "--pull=never", IMAGE, capture=True)
    try:
        passed.append(check_model_file(container, config))
        passed.append(check_no_build_tools(container, config))
        port = free_port()
        with serving(container, config, port) as server:
            passed.append(wait_until_healthy(server, port))
            passed.append(check_cutout(port))
            passed.append(check_healthcheck(container, config, port))
            passed.append(check_uids(server))
            passed.append(check_graceful_stop(server))
    finally:
        buildah("rm", container)
    size = buildah("images", "--format", "{{.Size}}", IMAGE, capture=True)
    passed.append(f"image size {size} (buildah images)")
    print("image-test passed: " + ", ".join(passed))
    return 0


def run_args(container: str, config: ImageConfig, command: list[str], port: int | None = None) -> list[str]:
    """`buildah run` of `command` as the image's user, in its WORKDIR, with its ENV."""
    env = {**config.env, **({"PORT": str(port)} if port is not None else {})}
    return buildah_command("run", "--isolation", ISOLATION, "--network", "host",
                           "--user", config.user, "--workingdir", config.workdir,
                           *[arg for key, value in env.items() for arg in ("--env", f"{key}={value}")],
                           container, "--", *command)


@contextlib.contextmanager
def serving(container: str, config: ImageConfig, port: int):
    """The image's CMD, in its own process group, stopped (TERM, then KILL) on exit."""
    server = subprocess.Popen(run_args(container, config, config.cmd, port), start_new_session=True)
    try:
        yield server
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    # chroot isolation: the service's processes are host processes in this group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)


def free_port() -> int:
    # gunicorn binds 0.0.0.0:PORT, so the port must be free on every address.
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> int:
    try:
        with LOOPBACK.open(f"http://127.0.0.1:{port}{path}", timeout=REQUEST_TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_until_healthy(server: subprocess.Popen, port: int) -> str:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if server.poll() is not None:
            sys.exit(f"error: the image's CMD exited with status {server.returncode}")
        with contextlib.suppress(OSError):
            if get(port, HEALTH_PATH) == 200:
                return f"healthy in {time.monotonic() - started:.1f} s"
        time.sleep(0.5)
    sys.exit(f"error: {HEALTH_PATH} did not answer 200 within {START_TIMEOUT_S} s")


def check_cutout(port: int) -> str:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{PHOTO.name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + PHOTO.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/bg/remove", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with LOOPBACK.open(request, timeout=REQUEST_TIMEOUT_S) as response:
        content_type, png = response.headers["Content-Type"], response.read()
    assert content_type == "image/png", f"/api/bg/remove answered {content_type}"
    cutout = Image.open(io.BytesIO(png))
    assert cutout.format == "PNG" and cutout.mode == "RGBA", f"{cutout.format} {cutout.mode}"
    lowest, highest = cutout.getchannel("A").getextrema()
    assert lowest < 255 and highest > 0, f"alpha spans {lowest}..{highest}: no cutout"
    return f"{PHOTO.name} -> transparent RGBA PNG (alpha {lowest}..{highest})"


def check_healthcheck(container: str, config: ImageConfig, port: int) -> str:
    """HEALTHCHECK passes against the server and fails where nothing listens."""
    def status(on_port: int) -> int:
        return subprocess.run(run_args(container, config, config.healthcheck, on_port),
                              capture_output=True, timeout=REQUEST_TIMEOUT_S).returncode

    healthy, closed = status(port), status(free_port())
    assert healthy == 0, f"HEALTHCHECK exited {healthy} against a healthy server"
    assert closed != 0, "HEALTHCHECK exited 0 with no server listening"
    return f"HEALTHCHECK exit 0 (and {closed} with no server)"


def gunicorn_processes(server: subprocess.Popen) -> dict[int, tuple[int, set[int]]]:
    """pid -> (parent pid, uids) of the gunicorn processes in the server's group:
    chroot isolation runs the container's processes as host processes."""
    found = {}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        with contextlib.suppress(OSError):
            argv = [Path(os.fsdecode(arg)).name for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
            # python running gunicorn's script, not buildah's wrappers whose arguments name it
            if os.getpgid(pid) != server.pid or not (argv[0].startswith("python") and argv[1:2] == ["gunicorn"]):
                continue
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            found[pid] = (int(status["PPid"]), {int(uid) for uid in status["Uid"].split()})
    return found


def check_uids(server: subprocess.Popen) -> str:
    processes = gunicorn_processes(server)
    assert len(processes) >= 2, f"expected gunicorn's master and worker, found {sorted(processes)}"
    uids = {pid: found for pid, (_, found) in processes.items()}
    assert all(found == {SERVICE_UID} for found in uids.values()), f"uids by pid: {uids}"
    return f"{len(processes)} gunicorn processes as uid {SERVICE_UID}"


def check_graceful_stop(server: subprocess.Popen) -> str:
    """SIGTERM to gunicorn's master alone (what `docker stop` sends PID 1) stops it, status 0."""
    processes = gunicorn_processes(server)
    (master,) = [pid for pid, (parent, _) in processes.items() if parent not in processes]
    started = time.monotonic()
    os.kill(master, signal.SIGTERM)
    status = server.wait(timeout=STOP_TIMEOUT_S)
    assert status == 0, f"the container exited with status {status} after SIGTERM"
    return f"SIGTERM -> exit 0 in {time.monotonic() - started:.1f} s"


def check_no_build_tools(container: str, config: ImageConfig) -> str:
    """The runtime stage holds no build or test dependency (the build stage's npm, onnx...)."""
    probe = ("import importlib.util, shutil; print(' '.join([m for m in %r if importlib.util.find_spec(m)]"
             " + [t for t in ('node', 'npm', 'gcc') if shutil.which(t)]))" % (BUILD_ONLY_MODULES,))
    done = subprocess.run(run_args(container, config, ["python", "-c", probe]),
                          capture_output=True, text=True, check=True, timeout=REQUEST_TIMEOUT_S)
    assert not done.stdout.strip(), f"the runtime image has build tools: {done.stdout.strip()}"
    return "no build tools"


def check_build_context() -> str:
    """Copy the whole context into a scratch image, as `COPY .` would, and look inside."""
    probe = CACHE_DIR / "context-probe.Dockerfile"
    probe.write_text("FROM scratch\nCOPY . /context\n")
    buildah("bud", "--isolation", ISOLATION, "--quiet", "--file", str(probe), "--tag", CONTEXT_IMAGE, str(ROOT))
    container = buildah("from", "--pull=never", CONTEXT_IMAGE, capture=True)
    try:
        context = Path(buildah("mount", container, capture=True)) / "context"
        missing = [path for path in CONTEXT_NEEDS if not (context / path).exists()]
        leaked = [path for path in CONTEXT_EXCLUDES if (context / path).exists()]
        leaked += [str(path.relative_to(context)) for path in context.rglob("__pycache__")]
        size_mb = sum(path.stat().st_size for path in context.rglob("*") if path.is_file()) / 1e6
    finally:
        buildah("rm", container)
        buildah("rmi", CONTEXT_IMAGE)
    assert not missing, f".dockerignore drops what the build needs: {missing}"
    assert not leaked, f".dockerignore lets into the build context: {leaked}"
    return f"build context {size_mb:.1f} MB as .dockerignore says"


def check_model_file(container: str, config: ImageConfig) -> str:
    manifest = json.loads(MANIFEST.read_text())
    mount = Path(buildah("mount", container, capture=True))
    try:
        model = mount / config.workdir.lstrip("/") / "models" / manifest["file"]
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
    finally:
        buildah("umount", container)
    assert digest == manifest["sha256"], f"{model.name} in the image: sha256 {digest} vs {manifest['sha256']}"
    return f"model sha256 {digest[:12]} = manifest"


if __name__ == "__main__":
    sys.exit(main())
